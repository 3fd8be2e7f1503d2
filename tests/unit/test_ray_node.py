"""The rules mindr1 applies to `ray start` (pure: no Ray is started here)."""
import stat

import pytest

from mindr1.rl.ray_node import LOCAL_ONLY_ENV, RayAccessError, require_auth, start_args


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_head_gets_a_private_token_loopback_and_a_local_dashboard(home):
    env = {}
    argv = start_args(["--head", "--node-ip-address", "127.0.0.1", "--port", "6379"], env)
    token = home / ".ray" / "auth_token"
    assert env["RAY_AUTH_MODE"] == "token" and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text()) == 64 and env[LOCAL_ONLY_ENV] == "0"
    assert "--dashboard-host=127.0.0.1" in argv and not any("client-server" in a for a in argv)
    before = token.read_text()
    start_args(["--head", "--node-ip-address=127.0.0.1"], {})
    assert token.read_text() == before  # an existing token is kept


def test_multi_node_head_asks_ray_for_its_interfaces_only_when_given_an_address(home):
    env = {"RAY_DASHBOARD_HOST": "10.0.0.1", "RAY_CLIENT_SERVER_PORT": "10001"}
    argv = start_args(["--head", "--node-ip-address=10.0.0.1"], env)
    assert LOCAL_ONLY_ENV not in env
    assert "--dashboard-host=10.0.0.1" in argv and "--ray-client-server-port=10001" in argv


def test_worker_needs_the_heads_token(home):
    with pytest.raises(RayAccessError, match="copy the head node's .*RAY_AUTH_TOKEN"):
        start_args(["--address", "10.0.0.1:6379"], {})
    assert not (home / ".ray").exists()
    env = {"RAY_AUTH_TOKEN": "ab" * 32}
    assert start_args(["--address", "10.0.0.1:6379"], env) == ["--address", "10.0.0.1:6379"]
    assert env["RAY_AUTH_MODE"] == "token"
    with pytest.raises(RayAccessError, match="RAY_AUTH_TOKEN_PATH"):
        require_auth(create_token=True, env={"RAY_AUTH_TOKEN_PATH": str(home / "missing")})


def test_disabled_only_when_asked_and_with_a_warning(home, capsys):
    env = {"RAY_AUTH_MODE": "disabled"}
    assert require_auth(create_token=True, env=env) is None
    assert env["RAY_AUTH_MODE"] == "disabled" and "authentication is OFF" in capsys.readouterr().err
    assert not (home / ".ray").exists()
    with pytest.raises(RayAccessError, match="expected 'token'"):
        require_auth(create_token=True, env={"RAY_AUTH_MODE": "tokn"})

"""Ray access rules of mindr1, for the local cluster of ``start_ray`` and the nodes the scripts start.

Seen in Ray 2.60's source (``ray/_private/authentication``, ``ray/scripts/scripts.py``,
``ray/_private/services.py``, ``ray/_private/node.py``):

- Token authentication: ``ray.init()`` of a new local cluster turns it on by itself, but
  ``ray start --head`` turns it on only when a token already exists, and ``ray.init(address=...)``
  never does: a driver or node must have ``RAY_AUTH_MODE=token`` and the token in
  ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (that order).
  Here the mode is ``token`` unless the user sets ``RAY_AUTH_MODE=disabled`` (then a warning),
  and the head writes a missing token to ``~/.ray/auth_token`` readable by its owner only (Ray's
  own ``ray get-auth-token --generate`` leaves it to the umask).
- Binding: Ray replaces a node address of 127.0.0.1 by the machine's routable address unless
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (read when ``ray._private.ray_constants`` is
  imported), and then GCS, raylet, agents and workers listen on every interface. With it set to
  0 they all listen on 127.0.0.1; that is what a single-machine run wants.
- The client server: ``ray start --head`` starts it on port 10001 (all interfaces of the node
  address) whenever ``grpc`` imports, and has no switch to turn it off. :func:`main` runs
  ``ray start`` with its dependency check answering "not installed", unless
  ``RAY_CLIENT_SERVER_PORT`` asks for it.
- The dashboard binds to ``RAY_DASHBOARD_HOST`` when given, else to 127.0.0.1.

``python -m mindr1.rl.ray_node [ray start arguments]`` is ``ray start`` with these rules.
"""
from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

logger = logging.getLogger("mindr1.ray")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
DISABLED_WARNING = ("RAY_AUTH_MODE=disabled: Ray token authentication is OFF. Anyone who can reach this "
                    "cluster's ports can run any code as this user. Unset RAY_AUTH_MODE to turn it back on.")


class RayAccessError(RuntimeError):
    """A node or driver cannot join safely (no token); the message says how to fix it."""


def is_loopback(host: str | None) -> bool:
    return bool(host) and host.strip("[]") in LOOPBACK


def default_token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


def _token_source(env) -> str | None:
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}" if _nonempty(Path(path)) else None
    return str(default_token_path()) if _nonempty(default_token_path()) else None


def _nonempty(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except OSError:
        return False


def write_token(path: Path) -> None:
    """A new 256-bit token at ``path`` (directory 0700, file 0600), created atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def require_auth(create_token: bool, env=None) -> str | None:
    """Set ``RAY_AUTH_MODE=token`` (unless the user disabled it) and make sure a token is at hand.

    create_token: the head / a new local cluster may create ``~/.ray/auth_token``; a node or a
      driver joining a cluster must be given the head's token instead.
    Returns where the token comes from, or None when the user disabled authentication.
    """
    env = os.environ if env is None else env
    mode = env.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        logger.warning(DISABLED_WARNING)
        print(f"[mindr1] WARNING: {DISABLED_WARNING}", file=sys.stderr, flush=True)
        return None
    if mode not in ("", "token"):
        raise RayAccessError(f"RAY_AUTH_MODE={env['RAY_AUTH_MODE']!r}: expected 'token' (the default) or 'disabled'")
    env["RAY_AUTH_MODE"] = "token"
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None and env is os.environ:
        raylet.Config.initialize("")  # Ray caches the mode; this is how Ray itself refreshes it
    source = _token_source(env)
    if source is None and env.get("RAY_AUTH_TOKEN_PATH"):
        raise RayAccessError(f"RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']} is missing or empty")
    if source is None:
        if not create_token:
            raise RayAccessError(
                f"no Ray authentication token on this machine: copy the head node's {default_token_path()} "
                "here (same path, mode 600) or set RAY_AUTH_TOKEN to its content")
        write_token(default_token_path())
        source = str(default_token_path())
        print(f"[mindr1] wrote a new Ray authentication token to {source}; copy it to every node that joins "
              "(or set RAY_AUTH_TOKEN there)", file=sys.stderr, flush=True)
    return source


def keep_local(env=None) -> None:
    """Make Ray started from this process keep every socket on 127.0.0.1 (see the module docstring)."""
    env = os.environ if env is None else env
    env.setdefault(LOCAL_ONLY_ENV, "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and env[LOCAL_ONLY_ENV] == "0":
        # Ray already imported read the variable; its node-address lookup reads this attribute at call time.
        constants.ENABLE_RAY_CLUSTER = False


def _flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def start_args(argv: list[str], env=None) -> list[str]:
    """Apply the rules to ``ray start`` arguments (and this process's environment); returns the arguments."""
    env = os.environ if env is None else env
    head = "--head" in argv
    require_auth(create_token=head, env=env)
    node_ip = _flag_value(argv, "--node-ip-address")
    if head and (node_ip is None or is_loopback(node_ip)):
        keep_local(env)
        if node_ip is None:
            argv = [*argv, "--node-ip-address=127.0.0.1"]
    argv = list(argv)
    if head and _flag_value(argv, "--dashboard-host") is None:
        argv.append(f"--dashboard-host={env.get('RAY_DASHBOARD_HOST') or '127.0.0.1'}")
    port = env.get("RAY_CLIENT_SERVER_PORT")
    if head and port and _flag_value(argv, "--ray-client-server-port") is None:
        argv.append(f"--ray-client-server-port={port}")
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = start_args(argv)
    except RayAccessError as exc:
        print(f"[mindr1] error: {exc}", file=sys.stderr)
        return 2
    import ray.scripts.scripts as ray_cli

    if _flag_value(argv, "--ray-client-server-port") is None:
        # `ray start` starts the client server whenever this check passes (Ray 2.60 scripts.py, `start`).
        ray_cli.get_ray_client_dependency_error = lambda: ImportError(
            "Ray client server not started (mindr1: set RAY_CLIENT_SERVER_PORT to start it)")
    sys.argv = ["ray", "start", *argv]
    return ray_cli.main() or 0


if __name__ == "__main__":
    sys.exit(main())

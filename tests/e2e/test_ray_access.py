"""Cluster access: the head script's Ray refuses a driver without the token and runs one with it, and
a local run (Ray's local cluster, the spawn launcher's rendezvous) listens on 127.0.0.1 only.

Every Ray here runs with its own HOME (token) and RAY_TMPDIR (session), and is stopped by the pids
of the processes whose command line names that directory, never by `ray stop`.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAD_PORT = 46871  # uncommon fixed port for the head's GCS
WILDCARD = {"0.0.0.0", "::"}
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
DRIVER = ("import os, ray; ray.init(address='127.0.0.1:%d', log_to_driver=False); "
          "print('task ran in', ray.get(ray.remote(lambda: os.getpid()).remote()))" % HEAD_PORT)


def _listening(procs) -> list[tuple[str, str, int]]:
    out = []
    for p in procs:
        try:
            for c in p.net_connections("inet"):
                if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr):  # TCP listeners, UDP sockets
                    out.append((p.name(), c.laddr.ip, c.laddr.port))
        except psutil.Error:
            pass
    return out


def _procs_naming(text: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(text in arg for arg in p.info["cmdline"] or ()):
            found.append(p)
    return found


def _kill(procs) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=20)


@pytest.fixture
def ray_dirs():
    # Ray's socket paths live under RAY_TMPDIR and must stay short (AF_UNIX: 107 bytes)
    base = Path(tempfile.mkdtemp(prefix="mr1ray-", dir="/tmp"))
    yield base
    _kill(_procs_naming(str(base / "t")))
    shutil.rmtree(base, ignore_errors=True)


def _driver(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=180)


def test_head_script_requires_the_token_and_binds_loopback(ray_dirs):
    head_home, driver_home, tmp = ray_dirs / "head", ray_dirs / "driver", ray_dirs / "t"
    for d in (head_home, driver_home, tmp):
        d.mkdir()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base_env.update(PYTHONPATH=str(ROOT), RAY_TMPDIR=str(tmp), RAY_worker_niceness="0")
    head_env = {**base_env, "HOME": str(head_home), "PYTHON": sys.executable, "RAY_HEAD_IP": "127.0.0.1",
                "RAY_PORT": str(HEAD_PORT), "DEVICE": "CPU", "DEVICES_PER_NODE": "1", "NNODES": "1",
                "RAY_WAIT_S": "120", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # The script starts the head, waits for its device, then runs GRPO: a missing config stops it there.
    head = subprocess.run(["bash", "examples/r1_zero/ray_head.sh", str(ray_dirs / "no_such_config.yaml")],
                          cwd=ROOT, env=head_env, capture_output=True, text=True, timeout=300)
    assert "[ray_head] 1 CPU devices on 1 nodes" in head.stdout, head.stdout[-3000:] + head.stderr[-3000:]
    token_file = head_home / ".ray" / "auth_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()

    # A single-machine head: the driver must keep loopback too (see mindr1/rl/ray_node.py).
    driver_env = {**base_env, "HOME": str(driver_home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                  "RAY_gcs_server_port_wait_time_s": "2"}
    no_token = _driver(driver_env)
    assert no_token.returncode != 0 and "Authentication token is missing or incorrect" in no_token.stderr, \
        no_token.stdout[-2000:] + no_token.stderr[-3000:]
    wrong = _driver({**driver_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64})
    assert wrong.returncode != 0 and "Authentication token is missing or incorrect" in wrong.stderr
    ok = _driver({**driver_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    assert ok.returncode == 0 and "task ran in" in ok.stdout, ok.stdout[-2000:] + ok.stderr[-3000:]

    procs = _procs_naming(str(tmp))
    assert procs
    sockets = _listening(procs)
    assert sockets and not [s for s in sockets if s[1] not in LOOPBACK], sockets
    assert not [p for p in procs if any("ray.util.client.server" in a for a in p.cmdline())]
    assert not [s for s in sockets if s[2] == 10001]


def test_worker_without_token_is_refused_before_starting(ray_dirs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(ray_dirs), PYTHONPATH=str(ROOT), MASTER_ADDR="127.0.0.1", RAY_PORT=str(HEAD_PORT),
               PYTHON=sys.executable, DEVICE="CPU", DEVICES_PER_NODE="1")
    proc = subprocess.run(["bash", "examples/r1_zero/ray_worker.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "copy the head node's" in proc.stderr and "RAY_AUTH_TOKEN" in proc.stderr


LOCAL_RUN = """
import json, os, sys, types, psutil, ray
from mindr1.rl.workers.cluster import start_ray
cfg = types.SimpleNamespace(training=types.SimpleNamespace(ray_address=None, ray_num_cpus=1))
start_ray(cfg)
ray.get(ray.remote(lambda: os.getpid()).remote())
me = psutil.Process()
sockets = []
for p in [me] + me.children(recursive=True):
    try:
        sockets += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)]
    except psutil.Error:
        pass
print(json.dumps(sockets))
ray.shutdown()
"""


def test_local_ray_listens_on_loopback_only(ray_dirs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(ray_dirs), PYTHONPATH=str(ROOT), RAY_TMPDIR=str(ray_dirs / "t"), RAY_worker_niceness="0")
    proc = subprocess.run([sys.executable, "-c", LOCAL_RUN], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sockets = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(sockets) >= 3, sockets  # GCS, raylet, workers at least
    assert not [s for s in sockets if s[1] not in LOOPBACK], sockets
    assert stat.S_IMODE((ray_dirs / ".ray" / "auth_token").stat().st_mode) == 0o600


def _rank_sockets(rank: int, world_size: int) -> list:
    import torch
    import torch.distributed as dist

    t = torch.ones(1)
    dist.all_reduce(t)
    return [(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("inet")
            if c.status == psutil.CONN_LISTEN]


def test_spawn_rendezvous_listens_on_loopback_only():
    from mindr1.parallel.launch import spawn

    per_rank = spawn(_rank_sockets, 2, timeout_s=120, threads=1)
    sockets = [s for rank in per_rank for s in rank]
    assert sockets and not [s for s in sockets if s[0] not in LOOPBACK], per_rank

"""Faults and clusters: a killed rollout or actor worker stops the run with a message naming its role
and rank (no hang), the run resumes from its last checkpoint, and the same run works with its workers
on a second Ray node joined by ``ray start --address`` through mindr1's wrapper (token on, head and
worker on loopback)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_grpo import ROOT, grpo_command, run_grpo, step_metrics, tiny_setup  # noqa: E402,F401
from test_ray_access import ray_dirs  # noqa: E402,F401

TIMEOUT_S = 90


def _wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read()[-4000:] if proc.stdout is not None else ""
            raise AssertionError(f"{proc.args[:4]} ended (exit {proc.returncode}) while waiting for {what}:\n{out}")
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_during_run(save: Path, data, role: str, rank: int, *overrides: str) -> str:
    cmd = grpo_command(save, data, "training.train_iters=50", "training.save_interval=1", "training.eval_data_path=null",
                       f"training.worker_timeout_s={TIMEOUT_S}", *overrides)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (save / "latest_checkpointed_iteration.txt").exists(), 600, "the first checkpoint", proc)
        workers = json.loads((save / "workers.json").read_text())
        pid = next(w["pid"] for w in workers if w["role"] == role and w["rank"] == rank)
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=TIMEOUT_S + 120)  # bounded: the run must not hang
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out[-4000:]
    return out


def test_killed_rollout_worker_is_named(tmp_path, tiny_setup):
    out = _kill_during_run(tmp_path / "run", tiny_setup, "rollout", 0)
    assert "rollout rank 0 died" in out, out[-3000:]


def test_killed_actor_worker_is_named_and_run_resumes(tmp_path, tiny_setup):
    save = tmp_path / "run"
    out = _kill_during_run(save, tiny_setup, "actor", 1, "resource_pool.actor_rollout=2",
                           "actor_rollout_ref.actor_rollout.tensor_model_parallel_size=2")
    assert "actor rank 1 died" in out, out[-3000:]
    done = int((save / "latest_checkpointed_iteration.txt").read_text())
    resumed = run_grpo(save, tiny_setup, "training.train_iters=50", "training.exit_after_iters=1",
                       "training.eval_data_path=null", "resource_pool.actor_rollout=2",
                       "actor_rollout_ref.actor_rollout.tensor_model_parallel_size=2")
    assert f"resuming GRPO from step {done}" in resumed.stdout + resumed.stderr
    assert done + 1 in step_metrics(save)


def _ray_node(log: Path, *args: str, env: dict) -> subprocess.Popen:
    """`ray start ... --block` through mindr1's wrapper (token, loopback, no client server) in its own
    session, so that stopping it stops exactly this node; its output goes to ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "mindr1.rl.ray_node", *args, "--block"], env=env, cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _node_logs(tmp: Path, logs: list[Path]) -> str:
    """What the nodes printed and the tail of Ray's own error logs, for a failure message."""
    parts = [f"--- {p.name}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists()]
    for err in sorted(tmp.glob("ray/session_*/logs/*.err"))[:8]:
        text = err.read_text(errors="replace").strip()
        if text:
            parts.append(f"--- {err.name}:\n{text[-1500:]}")
    return "\n".join(parts)


def test_workers_on_a_second_node_joined_by_ray_start(tmp_path, tiny_setup, ray_dirs):
    import secrets

    from mindr1.parallel.launch import free_port

    port = free_port()
    # A Ray session of its own (short RAY_TMPDIR from ray_dirs, whose teardown kills what runs from it)
    # keeps other tests' Ray sessions (and their ports) out of this one.
    ray_tmp = ray_dirs / "t"
    ray_tmp.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env = {**base, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": str(ray_tmp), "RAY_worker_niceness": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # Two nodes on one machine: a loopback head kept local-only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, what
    # the wrapper sets by default) binds 127.0.0.1 while a joining node resolves 127.0.0.1 to the routable
    # address and never reaches it, and with the variable at 0 `ray start --address` refuses to run
    # ("Multi-node Ray clusters are not supported"; how this test failed in CI, after an in-process
    # controller of an earlier test had set it in os.environ). So every process here says 1.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    logs = [tmp_path / "head.log", tmp_path / "worker.log"]
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(_ray_node(logs[0], "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                               "--include-dashboard=false", "--disable-usage-stats", env=env))
        _wait_for(lambda: _nodes(port, env) >= 1, 180, "the head node", nodes[0])
        nodes.append(_ray_node(logs[1], f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=4",
                               "--disable-usage-stats", env=env))
        try:
            _wait_for(lambda: _nodes(port, env) >= 2, 300, "the worker node to join", nodes[1])
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_node_logs(ray_tmp, logs)}") from None
        save = tmp_path / "run"
        cmd = grpo_command(save, tiny_setup, "training.train_iters=1", "training.eval_data_path=null",
                           f"training.ray_address=127.0.0.1:{port}", "training.plot=false")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        nodes_used = {w["node_id"] for w in json.loads((save / "workers.json").read_text())}
        assert 1 in step_metrics(save) and len(nodes_used) >= 1
        assert _nodes(port, env) == 2
    finally:
        for p in reversed(nodes):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def _nodes(port: int, env: dict) -> int:
    code = ("import ray; ray.init(address='127.0.0.1:%d', log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))" % port)
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        return 0
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0

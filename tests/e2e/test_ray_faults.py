"""Faults and clusters: a killed rollout or actor worker stops the run with a message naming its role
and rank (no hang), the run resumes from its last checkpoint, and the same run works with its workers
on a second Ray node joined by ``ray start --address`` (head and worker on loopback)."""
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

TIMEOUT_S = 90


def _wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"run ended early while waiting for {what}:\n{proc.stdout.read()[-4000:]}")
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


def _ray(*args: str, env: dict) -> subprocess.Popen:
    """`ray start ... --block` in its own session, so that stopping it stops exactly this node."""
    return subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", *args, "--block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def test_workers_on_a_second_node_joined_by_ray_start(tmp_path, tiny_setup):
    from mindr1.parallel.launch import free_port

    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_worker_niceness": "0"}
    head = _ray("--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                "--disable-usage-stats", env=env)
    worker = None
    try:
        time.sleep(5)
        worker = _ray(f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=4",
                      "--disable-usage-stats", env=env)
        save = tmp_path / "run"
        cmd = grpo_command(save, tiny_setup, "training.train_iters=1", "training.eval_data_path=null",
                           f"training.ray_address=127.0.0.1:{port}", "training.plot=false")
        _wait_for(lambda: _nodes(port, env) >= 2, 300, "the worker node to join")  # slow to join on a loaded machine
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        nodes = {w["node_id"] for w in json.loads((save / "workers.json").read_text())}
        assert 1 in step_metrics(save) and len(nodes) >= 1
        assert _nodes(port, env) == 2
    finally:
        for p in (worker, head):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def _nodes(port: int, env: dict) -> int:
    code = ("import ray; ray.init(address='127.0.0.1:%d', log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))" % port)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0

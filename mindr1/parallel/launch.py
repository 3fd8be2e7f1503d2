"""Start N local processes over torch.distributed (gloo on CPU) and collect what each returns.

Used by the multi-process tests and the CPU demo; production runs use torchrun or Ray. A rank
that raises or dies stops the whole group with an error naming the rank; the whole launch has a
deadline, so nothing waits forever. :func:`run_ranks` starts a command as N ranks on this machine
(what ``torchrun --standalone`` does, without torchrun's stores listening on every interface).
Every rendezvous here is on 127.0.0.1 (``mindr1.parallel.state.loopback_store``).
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, results, timeout_s: float,
            threads: int) -> None:
    import torch

    from mindr1.parallel.state import init_distributed

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    try:
        init_distributed(timeout_s=timeout_s)
        out = fn(rank, world_size, *args)
        # Plain pickle copies tensors into the bytes; the queue's own pickler would share their
        # memory with this process, which is gone by the time the parent reads.
        results.put((rank, "ok", pickle.dumps(out)))
    except BaseException:  # report every failure, including SystemExit, to the parent
        results.put((rank, "error", traceback.format_exc()))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class LaunchError(RuntimeError):
    pass


def spawn(fn: Callable, world_size: int, *args: Any, timeout_s: float = 600, threads: int | None = None) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes; return the results by rank.

    ``fn`` must be importable (a module-level function). Raises :class:`LaunchError` naming the
    first rank that failed (with its traceback), or the ranks still running at the deadline.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    threads = threads or max(1, (os.cpu_count() or 1) // world_size)
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, fn, args, results, timeout_s, threads),
                         daemon=False) for r in range(world_size)]
    for p in procs:
        p.start()
    out: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(world_size)) - set(out))
                raise LaunchError(f"ranks {missing} did not finish within {timeout_s:.0f} s")
            try:
                rank, status, value = results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if not p.is_alive() and r not in out
                        and p.exitcode not in (0, None)]
                if dead:
                    raise LaunchError(f"rank {dead[0]} exited with code {procs[dead[0]].exitcode} "
                                      "without reporting a result") from None
                continue
            if status == "error":
                raise LaunchError(f"rank {rank} failed:\n{value}")
            out[rank] = pickle.loads(value)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    return [out[r] for r in range(world_size)]


def run_ranks(cmd: list[str], nproc: int, poll_s: float = 0.5) -> int:
    """Run ``cmd`` as ranks 0..nproc-1 of one group on this machine; return the first failing exit code, else 0.

    Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and MASTER_ADDR=127.0.0.1 with a
    free MASTER_PORT. When one rank fails (or this process is interrupted) the others are stopped.
    """
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
               "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(cmd, env=env))
    code = 0
    try:
        while procs and code == 0:
            for rank, p in enumerate(procs):
                if p.poll() not in (None, 0):
                    print(f"[mindr1] rank {rank} exited with code {p.returncode}; stopping the other ranks",
                          file=sys.stderr, flush=True)
                    code = p.returncode if p.returncode > 0 else 128 - p.returncode
                    break
            if all(p.poll() == 0 for p in procs):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        code = 130
    finally:
        _stop(procs)
    return code


def _stop(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

"""Start N local processes over torch.distributed (gloo on CPU) and collect what each returns.

Used by the multi-process tests and the CPU demo; production runs use torchrun or Ray. A rank
that raises or dies stops the whole group with an error naming the rank; the whole launch has a
deadline, so nothing waits forever.
"""
from __future__ import annotations

import os
import pickle
import queue
import socket
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

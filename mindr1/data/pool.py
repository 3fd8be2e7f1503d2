"""Forked preprocessing workers that cannot hang the run: one chunk per worker at a time, a deadline
per chunk, and a liveness check on every worker.

``multiprocessing.Pool`` silently replaces a worker that dies (killed, out of memory) and never
delivers the result of the chunk it held, so the writer waited forever. Here each worker has its own
pipe, the main process knows which chunk each one holds, and it waits on the pipes and on the
workers' exit sentinels together: a worker that dies stops the run with an error naming the chunk and
the signal, and a chunk not finished within ``timeout_s`` stops it too. Results come back in input
order with at most ``2 x workers`` chunks in flight, so memory stays bounded.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Callable, Iterable, Iterator

from mindr1.data.sources import Chunk, DataError


class WorkerFailure(DataError):
    """A preprocessing worker died or missed a chunk's deadline."""


def describe(chunk: Chunk) -> str:
    count = chunk.data.count(b"\n") + (not chunk.data.endswith(b"\n")) if chunk.rows is None else len(chunk.rows)
    last = chunk.start + max(count, 1) - 1
    return f"{chunk.path} {chunk.unit}s {chunk.start}-{last}"


def exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _serve(fn: Callable, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the main process's cleanup handler
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            return
        seq, chunk = item
        try:
            reply = ("ok", seq, fn(chunk))
        except BaseException as exc:  # report it; the main process decides
            reply = ("error", seq, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable exception or result
            conn.send(("error", seq, RuntimeError(f"{type(exc).__name__}: {exc}")))


class ChunkPool:
    """``workers`` forked processes running ``fn(chunk)``; :meth:`map` yields results in input order."""

    def __init__(self, fn: Callable, workers: int, timeout_s: float):
        ctx = mp.get_context("fork")
        self.timeout_s = float(timeout_s)
        self.procs, self.conns = [], []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(fn, child), daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)

    def map(self, chunks: Iterable[Chunk]) -> Iterator:
        source = iter(chunks)
        idle, busy, done = deque(range(len(self.procs))), {}, {}  # busy: worker -> (seq, chunk, deadline)
        sent = emitted = 0
        exhausted = False
        while True:
            while emitted in done:  # first: emitting frees look-ahead for the next dispatch
                yield done.pop(emitted)
                emitted += 1
            while idle and not exhausted and sent - emitted < 2 * len(self.procs):
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                    break
                w = idle.popleft()
                self._send(w, (sent, chunk), chunk)
                busy[w] = (sent, chunk, time.monotonic() + self.timeout_s)
                sent += 1
            if not busy:  # nothing in flight: everything sent was emitted above
                return
            self._wait(busy, idle, done)

    def _send(self, w: int, item, chunk: Chunk) -> None:
        try:
            self.conns[w].send(item)
        except (BrokenPipeError, ConnectionResetError):
            self._died(w, chunk)

    def _wait(self, busy: dict, idle: deque, done: dict) -> None:
        deadline = min(d for _, _, d in busy.values())
        sentinels = {self.procs[w].sentinel: w for w in range(len(self.procs))}
        ready = wait([self.conns[w] for w in busy] + list(sentinels), max(0.0, deadline - time.monotonic()))
        for w in [w for w in busy if self.conns[w] in ready]:  # results first: a worker may exit after replying
            try:
                status, seq, payload = self.conns[w].recv()
            except (EOFError, ConnectionResetError):
                self._died(w, busy[w][1])
            if status == "error":
                raise payload
            done[seq] = payload
            del busy[w]
            idle.append(w)
        for s in ready:
            if s in sentinels:
                w = sentinels[s]
                self._died(w, busy[w][1] if w in busy else None)
        now = time.monotonic()
        for w, (_, chunk, d) in busy.items():
            if now >= d:
                raise WorkerFailure(f"preprocessing worker {w} (pid {self.procs[w].pid}) did not finish "
                                    f"{describe(chunk)} within {self.timeout_s:g} s (--chunk-timeout); "
                                    "stopped, no output written")

    def _died(self, w: int, chunk: Chunk | None) -> None:
        proc = self.procs[w]
        proc.join(timeout=5)
        what = f"while processing {describe(chunk)}" if chunk is not None else "while idle"
        raise WorkerFailure(f"preprocessing worker {w} (pid {proc.pid}) died {what}: {exit_reason(proc.exitcode)} "
                            "(out of memory? the kernel log says); stopped, no output written")

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
        for proc in self.procs:
            proc.join(timeout=10)


def chunk_results(fn: Callable, chunks: Iterable[Chunk], workers: int, timeout_s: float) -> Iterator:
    """``fn`` over ``chunks`` in input order: in this process (1 worker) or a :class:`ChunkPool`."""
    if workers == 1:
        yield from map(fn, chunks)
        return
    pool = ChunkPool(fn, workers, timeout_s)
    try:
        yield from pool.map(chunks)
    finally:
        pool.close()


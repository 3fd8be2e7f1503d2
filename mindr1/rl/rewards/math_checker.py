"""Time-limited math equivalence: math-verify in a persistent worker process with a deadline.

math-verify's own timeout uses `signal.alarm`, which works only in the main thread of the
main interpreter; a reward function called from a Ray actor's thread pool would either raise
or run without a limit. So the comparison runs in a child process (`math_worker.py`) whose
main thread owns the timer, and this side adds a hard deadline (limit + grace) after which the
child is killed and restarted: a comparison stuck in C code, or a child that died, costs one
item (scored 0.0) and never hangs the caller. A batch runs on several such children in parallel
under one shared deadline (`check_batch`). Model output is only ever parsed, never evaluated.

The child starts on first use (~1 s: it imports sympy and warms the LaTeX grammar) and is
reused for every later item; a checker used after `os.fork()` starts its own child.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path

_WORKER = Path(__file__).with_name("math_worker.py")


class _WorkerLost(Exception):
    """The child missed its deadline or exited; it is killed and restarted on the next item."""


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass


class _Slot:
    """One worker process of a checker and its unread output."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.buf = b""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            _kill(self.proc)
        self.proc, self.buf = None, b""


def _kill_slots(slots: list) -> None:
    for slot in slots:
        if slot.proc is not None:
            _kill(slot.proc)


class MathChecker:
    """`check(gold, pred)` / `check_batch(pairs)` -> 1.0 | 0.0 with a time limit, safe from any thread.

    timeout_s: the per-item limit inside a worker (parsing both sides and comparing). A batch shares
      one deadline: `timeout_s` (+ `grace_s`) from the batch's start, moved later by the time each
      item that was decided (not timed out) took, up to `EXTENSION_CAP_S` per item. So hostile items
      (each running into its limit) cost one item's limit however many a batch holds, while a large
      batch of honest items (milliseconds each) is always decided in full. Items run in parallel on
      `workers` processes, shortest first; items not reached by the deadline score 0.0 and are
      counted as `batch_deadline`.
    grace_s: extra time before a worker is killed for not answering.
    startup_timeout_s: allowance for starting a worker (imports), not counted per item.
    memory_limit_mb: address-space limit of each worker (0 = none).
    workers: worker processes (each ~150 MB once sympy is imported).
    `stats` counts items by outcome (ok, timeout, killed, batch_deadline, error...) and worker starts.
    """

    EXTENSION_CAP_S = 0.25  # the most one decided item moves the batch's deadline

    def __init__(self, timeout_s: float = 5.0, grace_s: float = 2.0, startup_timeout_s: float = 120.0,
                 memory_limit_mb: int = 4096, workers: int = 1):
        if timeout_s <= 0 or grace_s < 0 or workers < 1:
            raise ValueError(f"MathChecker needs timeout_s > 0, grace_s >= 0 and workers >= 1 "
                             f"(got {timeout_s}, {grace_s}, {workers})")
        self.timeout_s, self.grace_s = float(timeout_s), float(grace_s)
        self.startup_timeout_s, self.memory_limit_mb = float(startup_timeout_s), int(memory_limit_mb)
        self.stats: dict[str, int] = {}
        self._lock = threading.Lock()
        self._slots = [_Slot() for _ in range(workers)]
        self._pid_owner = os.getpid()
        # One finaliser for the checker's lifetime: it kills whatever processes the slots hold then.
        self._finalizer = weakref.finalize(self, _kill_slots, self._slots)

    # ------------------------------------------------------------ public

    def check(self, gold: str, pred: str) -> float:
        """1.0 if `pred` is mathematically equivalent to `gold`, else 0.0 (also on timeout)."""
        return self.check_status(gold, pred)[0]

    def check_status(self, gold: str, pred: str) -> tuple[float, str]:
        """`(score, status)`: status is the worker's outcome ('ok', 'timeout', 'unparsable', ...)
        or 'killed: ...' when the hard deadline passed (callers count timeouts from it)."""
        return self.check_batch_status([(gold, pred)])[0]

    def check_batch(self, pairs: list[tuple[str, str]]) -> list[float]:
        """`check` over `(gold, pred)` pairs, in parallel on the workers, within one item's limit in all."""
        return [score for score, _ in self.check_batch_status(pairs)]

    def check_batch_status(self, pairs: list[tuple[str, str]]) -> list[tuple[float, str]]:
        """`check_status` over `(gold, pred)` pairs, in parallel on the workers, within one item's limit
        in all; items the deadline does not reach are `(0.0, 'batch_deadline')`."""
        results: list[tuple[float, str]] = [(0.0, "batch_deadline")] * len(pairs)
        if not pairs:
            return results
        with self._lock:
            slots = self._ready_slots()
            deadline = [time.monotonic() + self.timeout_s + self.grace_s]  # moved by _collect
            queue = deque(sorted(range(len(pairs)), key=lambda i: len(pairs[i][1])))
            busy: dict[int, tuple[int, float]] = {}  # slot index -> (item index, when it was sent)
            while queue or busy:
                self._dispatch(slots, pairs, queue, busy, deadline)
                if not busy:
                    break
                self._collect(slots, busy, results, deadline)
            for _ in queue:
                self._count("batch_deadline")
        return results

    @property
    def worker_pid(self) -> int | None:
        """The first worker's process id while one runs (for monitoring and fault-injection tests)."""
        pids = self.worker_pids
        return pids[0] if pids else None

    @property
    def worker_pids(self) -> list[int]:
        return [slot.proc.pid for slot in self._slots if slot.alive()]

    def close(self) -> None:
        with self._lock:
            for slot in self._slots:
                slot.stop()

    # ------------------------------------------------------------ batch scheduling

    def _dispatch(self, slots, pairs, queue: deque, busy: dict, deadline: list) -> None:
        for k, slot in enumerate(slots):
            if k in busy or not queue or not slot.alive():
                continue
            limit = min(self.timeout_s, deadline[0] - self.grace_s - time.monotonic())
            if limit <= 0:
                return  # the rest of the queue misses the batch's deadline
            i = queue.popleft()
            gold, pred = pairs[i]
            request = json.dumps({"gold": gold, "pred": pred, "limit": limit}).encode() + b"\n"
            try:
                self._write(slot.proc, request, deadline[0])
                busy[k] = (i, time.monotonic())
            except _WorkerLost as exc:
                self._count(f"killed: {exc}")
                slot.stop()

    def _collect(self, slots, busy: dict, results: list, deadline: list) -> None:
        fds = {slots[k].proc.stdout.fileno(): k for k in busy}
        readable, _, _ = select.select(list(fds), [], [], max(0.0, deadline[0] - time.monotonic()))
        for fd in readable:
            k = fds[fd]
            slot, (i, sent) = slots[k], busy[k]
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                status = f"killed: worker exited with code {slot.proc.wait()}"
                self._count(status)
                results[i] = (0.0, status)
                slot.stop()
                del busy[k]
                continue
            slot.buf += chunk
            if b"\n" in slot.buf:
                line, _, slot.buf = slot.buf.partition(b"\n")
                reply = json.loads(line)
                self._count(reply["status"])
                results[i] = (float(reply["score"]), str(reply["status"]))
                del busy[k]
                if reply["status"] != "timeout":  # decided work extends the batch; hostile items never do
                    deadline[0] += min(time.monotonic() - sent, self.EXTENSION_CAP_S)
        if time.monotonic() >= deadline[0]:
            for k in list(busy):
                self._count("killed: deadline passed waiting for the result")
                results[busy[k][0]] = (0.0, "killed: deadline passed waiting for the result")
                slots[k].stop()
                del busy[k]

    # ------------------------------------------------------------ worker lifecycle

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _ready_slots(self) -> list:
        if self._pid_owner != os.getpid():
            # Forked copy: the pipes belong to the parent's workers; leave them alone, start ours.
            for slot in self._slots:
                slot.proc, slot.buf = None, b""
            self._pid_owner = os.getpid()
        starting = [slot for slot in self._slots if not slot.alive()]
        for slot in starting:  # all spawned first: the imports (~1 s each) overlap
            slot.stop()
            slot.proc = subprocess.Popen([sys.executable, str(_WORKER), str(self.memory_limit_mb)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
            os.set_blocking(slot.proc.stdin.fileno(), False)
        deadline = time.monotonic() + self.startup_timeout_s
        for slot in starting:
            try:
                json.loads(self._read_line(slot, deadline))
            except _WorkerLost as exc:
                slot.stop()
                raise RuntimeError(f"math-verify worker ({_WORKER}) failed to start: {exc}; "
                                   "is math-verify installed in this interpreter?") from None
            self._count("worker_starts")
        return self._slots

    # ------------------------------------------------------------ pipe I/O with a deadline

    def _write(self, proc: subprocess.Popen, data: bytes, deadline: float) -> None:
        fd, view = proc.stdin.fileno(), memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerLost("deadline passed while sending the item")
            _, writable, _ = select.select([], [fd], [], remaining)
            if writable:
                try:
                    view = view[os.write(fd, view):]
                except BrokenPipeError:
                    raise _WorkerLost("worker exited") from None

    def _read_line(self, slot: _Slot, deadline: float) -> bytes:
        proc = slot.proc
        fd = proc.stdout.fileno()
        while b"\n" not in slot.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerLost("deadline passed waiting for the result")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise _WorkerLost(f"worker exited with code {proc.wait()}")
                slot.buf += chunk
        line, _, slot.buf = slot.buf.partition(b"\n")
        return line


DEFAULT_WORKERS = 2  # math-verify processes behind `acc` in each process (reward worker, driver)
_DEFAULT: MathChecker | None = None
_DEFAULT_LOCK = threading.Lock()


def default_checker() -> MathChecker:
    """The process-wide checker behind the registered `acc` verifier (DEFAULT_WORKERS processes)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = MathChecker(workers=DEFAULT_WORKERS)
        return _DEFAULT

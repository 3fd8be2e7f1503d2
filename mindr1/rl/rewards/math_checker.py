"""Time-limited math equivalence: math-verify in a persistent worker process with a deadline.

math-verify's own timeout uses `signal.alarm`, which works only in the main thread of the
main interpreter; a reward function called from a Ray actor's thread pool would either raise
or run without a limit. So the comparison runs in a child process (`math_worker.py`) whose
main thread owns the timer, and this side adds a hard deadline (limit + grace) after which the
child is killed and restarted: a comparison stuck in C code, or a child that died, costs one
item (scored 0.0) and never hangs the caller. Model output is only ever parsed, never evaluated.

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


class MathChecker:
    """`check(gold, pred) -> 1.0 | 0.0` with a per-item time limit, safe from any thread.

    timeout_s: the per-item limit inside the worker (parsing both sides and comparing).
    grace_s: extra time before the worker is killed for not answering.
    startup_timeout_s: allowance for starting the worker (imports), not counted per item.
    memory_limit_mb: address-space limit of the worker (0 = none).
    `stats` counts items by outcome (ok, timeout, killed, error...) and worker restarts.
    """

    def __init__(self, timeout_s: float = 5.0, grace_s: float = 2.0, startup_timeout_s: float = 120.0,
                 memory_limit_mb: int = 4096):
        if timeout_s <= 0 or grace_s < 0:
            raise ValueError(f"MathChecker needs timeout_s > 0 and grace_s >= 0 (got {timeout_s}, {grace_s})")
        self.timeout_s, self.grace_s = float(timeout_s), float(grace_s)
        self.startup_timeout_s, self.memory_limit_mb = float(startup_timeout_s), int(memory_limit_mb)
        self.stats: dict[str, int] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pid_owner = os.getpid()
        self._buf = b""

    # ------------------------------------------------------------ public

    def check(self, gold: str, pred: str) -> float:
        """1.0 if `pred` is mathematically equivalent to `gold`, else 0.0 (also on timeout)."""
        return self.check_status(gold, pred)[0]

    def check_status(self, gold: str, pred: str) -> tuple[float, str]:
        """`(score, status)`: status is the worker's outcome ('ok', 'timeout', 'unparsable', ...)
        or 'killed: ...' when the hard deadline passed (callers count timeouts from it)."""
        request = json.dumps({"gold": gold, "pred": pred, "limit": self.timeout_s}).encode() + b"\n"
        with self._lock:
            proc = self._ensure_worker()
            deadline = time.monotonic() + self.timeout_s + self.grace_s
            try:
                self._write(proc, request, deadline)
                reply = json.loads(self._read_line(proc, deadline))
            except _WorkerLost as exc:
                status = f"killed: {exc}"
                self._count(status)
                self._stop()
                return 0.0, status
            self._count(reply["status"])
        return float(reply["score"]), str(reply["status"])

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id while one runs (for monitoring and fault-injection tests)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def close(self) -> None:
        with self._lock:
            self._stop()

    # ------------------------------------------------------------ worker lifecycle

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _stop(self) -> None:
        if self._proc is not None:
            _kill(self._proc)
        self._proc, self._buf = None, b""

    def _ensure_worker(self) -> subprocess.Popen:
        if self._pid_owner != os.getpid():
            # Forked copy: the pipes belong to the parent's worker; leave it alone, start ours.
            self._proc, self._buf, self._pid_owner = None, b"", os.getpid()
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        proc = subprocess.Popen([sys.executable, str(_WORKER), str(self.memory_limit_mb)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        os.set_blocking(proc.stdin.fileno(), False)
        self._proc = proc
        weakref.finalize(self, _kill, proc)
        try:
            json.loads(self._read_line(proc, time.monotonic() + self.startup_timeout_s))
        except _WorkerLost as exc:
            self._stop()
            raise RuntimeError(f"math-verify worker ({_WORKER}) failed to start: {exc}; "
                               "is math-verify installed in this interpreter?") from None
        self._count("worker_starts")
        return proc

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

    def _read_line(self, proc: subprocess.Popen, deadline: float) -> bytes:
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerLost("deadline passed waiting for the result")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise _WorkerLost(f"worker exited with code {proc.wait()}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line


_DEFAULT: MathChecker | None = None
_DEFAULT_LOCK = threading.Lock()


def default_checker() -> MathChecker:
    """The process-wide checker behind the registered `acc` verifier (one worker per process)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = MathChecker()
        return _DEFAULT

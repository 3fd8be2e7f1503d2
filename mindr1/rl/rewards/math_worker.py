"""The math-verify worker process: reads JSON lines `{"gold", "pred", "limit"}` on stdin and
writes `{"score", "status"}` lines on stdout. Started by `math_checker.MathChecker`.

It runs as a plain script (it imports nothing from mindr1) so that it starts the same way
from a driver, a Ray actor's thread or a forked data worker. Two limits protect the caller:
here, an interval timer raises inside sympy after `limit` seconds (this is the process's main
thread, so signals work whatever thread the caller is on); in the caller, a deadline of
`limit` + grace kills this process if the timer could not fire (a hang inside C code).
An address-space limit turns a runaway allocation into a MemoryError rather than swapping.
"""
import json
import logging
import resource
import signal
import sys


class _Deadline(BaseException):
    """Raised by the timer; a BaseException so that math-verify's `except Exception` blocks,
    which would otherwise log it and go on to the next comparison, let it through."""


def _on_alarm(signum, frame):
    raise _Deadline()


def _candidates(expr: str, parse) -> list:
    # `\boxed{}` makes math-verify read the whole string as one LaTeX expression (`\dfrac12`,
    # `\sqrt{2}/2`); the raw form is the fallback for prose such as 'x = 3' or '18 apples'.
    return parse("\\boxed{" + expr + "}", parsing_timeout=None) or parse(expr, parsing_timeout=None)


def check(gold: str, pred: str, limit: float, parse, verify) -> tuple[float, str]:
    signal.setitimer(signal.ITIMER_REAL, max(limit, 1e-3))
    try:
        gold_parsed = _candidates(gold, parse)
        if not gold_parsed:
            return 0.0, "gold_unparsable"
        pred_parsed = _candidates(pred, parse)
        if not pred_parsed:
            return 0.0, "unparsable"
        return (1.0 if verify(gold_parsed, pred_parsed, timeout_seconds=None) else 0.0), "ok"
    except _Deadline:
        return 0.0, "timeout"
    except Exception as exc:  # a sympy failure on one item is a wrong answer, not a dead worker
        return 0.0, f"error: {type(exc).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main() -> None:
    memory_limit_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory_limit_mb > 0:
        limit = memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # math-verify logs every failed parse with the whole input: megabytes per adversarial item.
    logging.disable(logging.CRITICAL)
    from math_verify import parse, verify

    signal.signal(signal.SIGALRM, _on_alarm)
    check("1", "\\frac{2}{2}", 30.0, parse, verify)  # warm the LaTeX grammar before the first deadline
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        try:
            score, status = check(req["gold"], req["pred"], float(req["limit"]), parse, verify)
        except _Deadline:  # the timer fired between the end of `check` and its `finally`
            score, status = 0.0, "timeout"
        out.write(json.dumps({"score": score, "status": status}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()

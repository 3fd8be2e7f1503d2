"""Time to score a batch with hostile completions: item by item (`check` per item, what `acc` did before
batches; baseline) against `check_batch` on the checker's worker pool, same checker settings, same run.

    python benchmarks/verifier_batch.py [--hostile 8] [--honest 56] [--timeout 1.0] [--workers 2]
"""
from __future__ import annotations

import argparse
import time

from mindr1.rl.rewards.math_checker import MathChecker

HOSTILE = "9^{9^{9^{9}}}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hostile", type=int, default=8)
    p.add_argument("--honest", type=int, default=56)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--grace", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    pairs = [("1", HOSTILE)] * args.hostile + [(f"\\frac{{{i}}}{{2}}", f"{i / 2}") for i in range(1, args.honest + 1)]
    checker = MathChecker(timeout_s=args.timeout, grace_s=args.grace, workers=args.workers)
    try:
        checker.check_batch([("1", "1.0")] * args.workers)  # start and warm every worker first
        start = time.perf_counter()
        serial = [checker.check(g, p) for g, p in pairs]
        t_serial = time.perf_counter() - start
        start = time.perf_counter()
        batch = checker.check_batch(pairs)
        t_batch = time.perf_counter() - start
    finally:
        checker.close()
    print(f"{len(pairs)} items ({args.hostile} hostile), limit {args.timeout} s + {args.grace} s grace, "
          f"{args.workers} workers")
    print(f"  baseline, item by item: {t_serial:7.2f} s   right: {sum(serial):.0f}")
    print(f"  check_batch:            {t_batch:7.2f} s   right: {sum(batch):.0f}   "
          f"speed-up x{t_serial / t_batch:.1f}")


if __name__ == "__main__":
    main()

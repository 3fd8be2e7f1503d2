"""R1-Zero task data: reasoning-gym arithmetic (chain_sum by default) as question/answer jsonl.

    python examples/r1_zero/make_arithmetic_data.py --out /tmp/r1z --train 400 --test 64

Train and held-out rows come from generators seeded far apart (reasoning-gym seeds item i with seed + i) and held-out questions that also
occur in train are dropped, so the held-out reward measures generalisation, not memory.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(task: str, n: int, seed: int, min_terms: int, max_terms: int, min_digits: int, max_digits: int) -> list[dict]:
    import reasoning_gym as rg

    ds = rg.create_dataset(task, min_terms=min_terms, max_terms=max_terms, min_digits=min_digits,
                           max_digits=max_digits, size=n, seed=seed)
    return [{"question": x["metadata"]["expression"] + " = ?", "answer": str(x["answer"])} for x in ds]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--task", default="chain_sum")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--test", type=int, default=64)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--terms", default="2,3", help="min,max terms")
    p.add_argument("--digits", default="1,2", help="min,max digits")
    args = p.parse_args()
    terms, digits = [int(x) for x in args.terms.split(",")], [int(x) for x in args.digits.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = rows(args.task, args.train, args.seed, *terms, *digits)
    seen = {r["question"] for r in train}
    test = [r for r in rows(args.task, args.test * 2, args.seed + 1_000_003, *terms, *digits) if r["question"] not in seen]
    for name, data in (("train", train), ("test", test[:args.test])):
        path = out / f"{name}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in data))
        tmp.replace(path)
        print(f"{path}: {len(data)} rows")


if __name__ == "__main__":
    main()

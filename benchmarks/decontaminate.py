"""Decontamination speed: ``tools/decontaminate.py`` end to end against open-r1's n-gram rule in plain Python.

The training file is ``--rows`` real rows (GSM8K train and MATH train, question + answer, cycled),
with ``--planted`` of them carrying a verbatim GSM8K test question. Both sides read the same rows
and check them against the same benchmarks (gsm8k, math500, aime24, amc23) with 8-grams:

- mindr1: ``python tools/decontaminate.py`` as a user runs it (a fresh process: start-up, reading,
  index build, matching, writing the clean file and the report), timed from outside;
- baseline: open-r1's ``scripts/decontaminate.py`` rule written out in one process, file already
  in memory: the set of benchmark n-grams as joined strings, each training n-gram joined and looked
  up (no I/O, no report), with its normalisation (lower case, words of letters and digits).

Prints rows/s of each, the ratio, and whether 100k rows take under a minute (the issue's goal).

    python benchmarks/decontaminate.py --rows 100000
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = "gsm8k,math500,aime24,amc23"


def training_rows(n: int, planted: int) -> list[dict]:
    from mindr1.artifacts import gsm8k_path, math_path

    base = []
    for path, q, a in ((gsm8k_path("train"), "question", "answer"), (math_path("train"), "problem", "solution")):
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            base.append({"question": row[q], "answer": row[a]})
    tests = [json.loads(line)["question"] for line in Path(gsm8k_path("test")).read_text().splitlines()]
    rows = [dict(base[i % len(base)]) for i in range(n)]
    step = max(1, n // max(1, planted))
    for k in range(planted):
        rows[k * step]["question"] += " " + tests[k]
    return rows


def open_r1_rule(rows: list[dict], n: int) -> int:
    """open-r1's rule: a row is contaminated when it shares one n-gram (joined words) with a benchmark question."""
    from mindr1.eval.benchmarks import load_benchmark

    word = re.compile(r"[^\W_]+")
    lookup = set()
    for spec in BENCHMARKS.split(","):
        for item in load_benchmark(spec).items:
            words = word.findall(item.question.lower())
            lookup.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    removed = 0
    for row in rows:
        hit = False
        for text in (row["question"], row["answer"]):
            words = word.findall(text.lower())
            if any(" ".join(words[i:i + n]) in lookup for i in range(len(words) - n + 1)):
                hit = True
                break
        removed += hit
    return removed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--planted", type=int, default=100)
    p.add_argument("--ngram", type=int, default=8)
    args = p.parse_args()
    rows = training_rows(args.rows, args.planted)
    with tempfile.TemporaryDirectory(prefix="mindr1-bench-decon-") as tmp:
        src = Path(tmp) / "train.jsonl"
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        out = Path(tmp) / "clean.jsonl"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "tools/decontaminate.py"), "--input", str(src), "--output",
                        str(out), "--map-keys", '{"text": ["question", "answer"]}', "--benchmarks", BENCHMARKS,
                        "--ngram", str(args.ngram)], check=True, capture_output=True, text=True, timeout=1800)
        t_ours = time.perf_counter() - t0
        report = json.loads(out.with_name(out.name + ".report.json").read_text())
        kept = sum(1 for _ in out.open())
    t0 = time.perf_counter()
    removed_base = open_r1_rule(rows, args.ngram)
    t_base = time.perf_counter() - t0
    removed = report["removed_rows"]
    print(f"{args.rows} rows ({args.planted} planted) against {BENCHMARKS}, {args.ngram}-grams:")
    print(f"  tools/decontaminate.py end to end: {t_ours:.1f} s, {args.rows / t_ours:,.0f} rows/s, "
          f"removed {removed}, kept {kept}")
    print(f"  open-r1 rule in memory (baseline): {t_base:.1f} s, {args.rows / t_base:,.0f} rows/s, "
          f"removed {removed_base} (any shared n-gram)")
    print(f"  ratio {t_base / t_ours:.2f}x the baseline's speed; 100k rows in "
          f"{t_ours * 100_000 / args.rows:.1f} s (goal < 60 s)")


if __name__ == "__main__":
    main()

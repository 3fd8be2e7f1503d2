"""Preprocessing throughput against the raw tokenizer, measured side by side in one run.

Data: GSM8K + MATH train (question/problem -> instruction, answer/solution -> output), ``--copies``
times (4 copies = 59,892 rows, the setup of ANCHORS.md), real Qwen2.5 tokenizer. For each handler
(plain text, Alpaca SFT with the qwen template) it times:

- ours: ``python tools/preprocess_data.py --workers N`` end to end in a fresh process (imports,
  tokenizer load, JSON reading, templates, label masks, .bin/.idx writing, summary);
- baseline: the same texts (already rendered, already in memory) through the same tokenizer's
  batch encoding (``tokenizers`` ``encode_batch_fast``, batches of 1000) in a forked pool of N
  processes that returns only token counts - the raw ceiling, with no reading or writing;
- optionally (``--hf``) transformers' ``AutoTokenizer.__call__`` in the same pool.

Medians (and bests) of ``--repeats`` interleaved runs; the rate per CPU-second is steadier than
wall time on a shared machine. Usage: ``python benchmarks/preprocess.py [--workers 2]``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TOK = None


def _rows(copies: int) -> list[dict]:
    from mindr1.artifacts import gsm8k_path, math_path

    rows = []
    for path, q, a in ((gsm8k_path("train"), "question", "answer"), (math_path("train"), "problem", "solution")):
        with open(path, encoding="utf-8") as fh:
            rows += [{"instruction": r[q], "output": r[a]} for r in map(json.loads, fh)]
    return rows * copies


def _texts(rows: list[dict], handler: str, tok) -> list[str]:
    from mindr1.data.templates import render_segments

    if handler == "GeneralPretrainHandler":
        return [r["instruction"] + "\n" + r["output"] for r in rows]
    return ["".join(t for t, _ in render_segments("qwen", [{"role": "user", "content": r["instruction"]},
                                                           {"role": "assistant", "content": r["output"]}], tok))
            for r in rows]


def _count_fast(batch: list[str]) -> int:
    return sum(len(e.ids) for e in _TOK._fast.encode_batch_fast(batch, add_special_tokens=False))


def _count_hf(batch: list[str]) -> int:
    return sum(len(ids) for ids in _TOK(batch, add_special_tokens=False)["input_ids"])


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (pool workers, subprocesses)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def baseline(texts: list[str], workers: int, fn) -> tuple[float, int, float]:
    batches = [texts[i:i + 1000] for i in range(0, len(texts), 1000)]
    start, cpu = time.perf_counter(), _cpu()
    pool = mp.get_context("fork").Pool(workers)
    tokens = sum(pool.map(fn, batches, chunksize=1))
    pool.close()
    pool.join()  # reaped, so the workers' CPU time is counted
    return time.perf_counter() - start, tokens, _cpu() - cpu


def ours(data: Path, handler: str, workers: int, out: Path, tok_dir: Path) -> tuple[float, dict, float]:
    keys = ('{"text":["instruction","output"]}' if handler == "GeneralPretrainHandler"
            else '{"prompt":"instruction","response":"output","query":"","system":"","history":""}')
    cmd = [sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input", str(data),
           "--output-prefix", str(out / handler), "--handler-name", handler, "--map-keys", keys,
           "--prompt-type", "qwen", "--tokenizer-name-or-path", str(tok_dir), "--workers", str(workers),
           "--no-progress-bar", "--log-interval", "1000000000"]
    start, cpu = time.perf_counter(), _cpu()
    subprocess.run(cmd, check=True, capture_output=True)
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    with open(f"{out / handler}_summary.json", encoding="utf-8") as fh:
        return elapsed, json.load(fh), cpu


def main(argv=None) -> int:
    global _TOK
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hf", action="store_true", help="also time transformers' AutoTokenizer in the same pool")
    args = p.parse_args(argv)

    from mindr1.artifacts import qwen25_tokenizer_dir
    from mindr1.data.tokenizer import TextTokenizer

    tok_dir = qwen25_tokenizer_dir()
    fast = TextTokenizer(tok_dir)
    hf = None
    if args.hf:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(tok_dir))
    rows = _rows(args.copies)
    print(f"{len(rows):,} rows (GSM8K + MATH train x {args.copies}), Qwen2.5 tokenizer, {args.workers} workers, "
          f"{os.cpu_count()} CPUs, medians of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        for handler in ("GeneralPretrainHandler", "AlpacaStyleInstructionHandler"):
            texts = _texts(rows, handler, fast)
            runs = {"ours": [], "raw": [], "hf": []}
            for _ in range(args.repeats):
                wall, summary, cpu = ours(data, handler, args.workers, Path(tmp), tok_dir)
                runs["ours"].append((wall, summary["tokens"], cpu, summary["elapsed_s"]))
                _TOK = fast
                runs["raw"].append(baseline(texts, args.workers, _count_fast))
                if hf is not None:
                    _TOK = hf
                    runs["hf"].append(baseline(texts, args.workers, _count_hf))
            _report(handler, len(rows), runs)
    return 0


def _report(handler: str, n: int, runs: dict) -> None:
    """Wall-clock rates, and CPU-second rates (steadier on a shared machine), both against the baseline."""
    print(f"\n{handler}")
    print(f"  {'path':<50} {'docs/s':>8} {'tokens/s':>10} {'ratio':>6} {'tok/CPU-s':>10} {'ratio':>6}")
    med = {k: statistics.median(r[0] for r in v) for k, v in runs.items() if v}
    cpu = {k: statistics.median(r[2] for r in v) for k, v in runs.items() if v}
    tokens = {k: v[0][1] for k, v in runs.items() if v}
    labels = {"ours": "ours: tools/preprocess_data.py end to end",
              "raw": "raw tokenizers encode_batch_fast pool (baseline)",
              "hf": "raw transformers AutoTokenizer pool"}
    for key, secs in med.items():
        print(f"  {labels[key]:<50} {n / secs:>8,.0f} {tokens[key] / secs:>10,.0f} {med['raw'] / secs:>6.2f} "
              f"{tokens[key] / cpu[key]:>10,.0f} {cpu['raw'] / cpu[key]:>6.2f}")
    best = {k: min(r[0] for r in v) for k, v in runs.items() if v}
    print(f"  best of {len(runs['ours'])} (least disturbed by other load): ours {tokens['ours'] / best['ours']:,.0f} "
          f"tokens/s, baseline {tokens['raw'] / best['raw']:,.0f} tokens/s, ratio {best['raw'] / best['ours']:.2f}")
    loop = statistics.median(r[3] for r in runs["ours"])
    print(f"  ours: start-up and teardown {med['ours'] - loop:.2f} s of {med['ours']:.2f} s; "
          f"tokens ours {tokens['ours']:,} (EOS included), baseline {tokens['raw']:,}")

if __name__ == "__main__":
    sys.exit(main())

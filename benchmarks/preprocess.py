"""Preprocessing throughput against the raw tokenizer, measured side by side in one run.

Data: GSM8K + MATH train (question/problem -> instruction, answer/solution -> output), ``--copies``
times (4 copies = 59,892 rows, the setup of ANCHORS.md), real Qwen2.5 tokenizer. For each handler
(plain text, Alpaca SFT with the qwen template) it times:

- ours: ``python tools/preprocess_data.py --workers N`` end to end in a fresh process (imports,
  tokenizer load, JSON reading, templates, label masks, .bin/.idx writing, summary);
- baseline (a): the same texts (already rendered, already in memory) through the ``tokenizers``
  batch encoding (``encode_batch_fast``, batches of 1000) in a forked pool of N processes that
  returns only token counts - the raw HF ceiling, with no reading or writing;
- baseline (b): the same texts through ``gigatoken``'s batch encoding (the engine of Megatron-LM's
  ``tools/preprocess_data_fast.py``, the fastest tokenizer on PyPI) in the same pool, no I/O;
  skipped with a note when gigatoken is not installed (``pip install 'mindr1[fast-tokenizer]'``);
- optionally (``--hf``) transformers' ``AutoTokenizer.__call__`` in the same pool.

ANCHORS.md's figure for Megatron's fast path end to end on this data (4 copies, idle machine) is
printed next to ours for reference; it is not measured here.

Medians (and bests) of ``--repeats`` interleaved runs; the rate per CPU-second is steadier than
wall time on a shared machine. Usage: ``python benchmarks/preprocess.py [--workers 2]``;
``--quick`` (1 copy, 1 repeat, the instruction handler only) runs in well under a minute.
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


def _count_giga(batch: list[str]) -> int:
    layout = _TOK.encode_batch(batch).layout  # a forked worker: gigatoken encodes on the calling thread
    return int(layout.offsets.data[-1] - layout.offsets.data[0])


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
    p.add_argument("--quick", action="store_true", help="1 copy, 1 repeat, the instruction handler only")
    args = p.parse_args(argv)
    handlers = ("GeneralPretrainHandler", "AlpacaStyleInstructionHandler")
    if args.quick:
        args.copies, args.repeats, handlers = 1, 1, ("AlpacaStyleInstructionHandler",)

    from mindr1.artifacts import qwen25_tokenizer_dir
    from mindr1.data.tokenizer import BACKEND_ENV, TextTokenizer

    tok_dir = qwen25_tokenizer_dir()
    saved = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = "tokenizers"
    fast = TextTokenizer(tok_dir)  # the tokenizers baseline (ours picks its backend itself, in its own process)
    if saved is None:
        del os.environ[BACKEND_ENV]
    else:
        os.environ[BACKEND_ENV] = saved
    try:
        import gigatoken

        giga = gigatoken.Tokenizer(str(tok_dir / "tokenizer.json"))
    except ImportError:
        giga = None
        print("gigatoken is not installed: baseline (b) skipped (pip install 'mindr1[fast-tokenizer]')")
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
        for handler in handlers:
            texts = _texts(rows, handler, fast)
            runs = {"ours": [], "raw": [], "giga": [], "hf": []}
            for _ in range(args.repeats):
                wall, summary, cpu = ours(data, handler, args.workers, Path(tmp), tok_dir)
                runs["ours"].append((wall, summary["tokens"], cpu, summary["elapsed_s"]))
                _TOK = fast
                runs["raw"].append(baseline(texts, args.workers, _count_fast))
                if giga is not None:
                    _TOK = giga
                    runs["giga"].append(baseline(texts, args.workers, _count_giga))
                if hf is not None:
                    _TOK = hf
                    runs["hf"].append(baseline(texts, args.workers, _count_hf))
            _report(handler, len(rows), runs, args.copies)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    return 0


MEGATRON_FAST_PATH = 1.63e6  # tokens/s, ANCHORS.md: preprocess_data_fast.py --use-gigatoken, 4 copies, idle


def _report(handler: str, n: int, runs: dict, copies: int) -> None:
    """Wall-clock rates, and CPU-second rates (steadier on a shared machine), ours against each baseline."""
    print(f"\n{handler}")
    med = {k: statistics.median(r[0] for r in v) for k, v in runs.items() if v}
    cpu = {k: statistics.median(r[2] for r in v) for k, v in runs.items() if v}
    tokens = {k: v[0][1] for k, v in runs.items() if v}
    labels = {"ours": "ours: tools/preprocess_data.py end to end",
              "raw": "(a) tokenizers encode_batch_fast pool, no I/O",
              "giga": "(b) gigatoken encode_batch pool, no I/O",
              "hf": "transformers AutoTokenizer pool, no I/O"}
    print(f"  {'path':<46} {'docs/s':>8} {'tokens/s':>11} {'tok/CPU-s':>11}")
    for key, secs in med.items():
        print(f"  {labels[key]:<46} {n / secs:>8,.0f} {tokens[key] / secs:>11,.0f} {tokens[key] / cpu[key]:>11,.0f}")
    rate = {k: tokens[k] / med[k] for k in med}
    for key in ("raw", "giga", "hf"):
        if key in rate:
            print(f"  ours / {labels[key].split(',')[0]:<40} {rate['ours'] / rate[key]:6.2f}x wall, "
                  f"{(tokens['ours'] / cpu['ours']) / (tokens[key] / cpu[key]):6.2f}x per CPU-second")
    if handler == "AlpacaStyleInstructionHandler":
        print(f"  ours / Megatron fast path as recorded in ANCHORS.md (1.63M tokens/s, idle, pretraining text"
              f"{'' if copies == 4 else f', 4 copies; this run {copies}'}): {rate['ours'] / MEGATRON_FAST_PATH:.2f}x")
    loop = statistics.median(r[3] for r in runs["ours"])
    print(f"  ours: start-up and teardown {med['ours'] - loop:.2f} s of {med['ours']:.2f} s; "
          f"tokens ours {tokens['ours']:,} (EOS included), baseline {tokens['raw']:,}")


if __name__ == "__main__":
    sys.exit(main())

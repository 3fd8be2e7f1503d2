"""``python tools/preprocess_data.py`` / ``mindr1 preprocess``: raw rows -> Megatron indexed dataset.

The main process reads the input files in chunks and writes the .bin/.idx files; ``--workers``
forked processes decode, validate, render and tokenize the chunks (at most a few chunks in
flight, so memory stays bounded and output order is the input order). Nothing heavier than
numpy, tokenizers and tqdm is imported: no torch, megatron or transformers unless the tokenizer
needs transformers. On any failure every temporary file is removed, so a run leaves either the
complete dataset and its ``PREFIX_summary.json`` or nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import Counter

from mindr1.data.sources import DataError

TRUNCATION_POLICY = ("instruction samples over --seq-length lose their tail (end of the response); a sample "
                     "whose prompt leaves no room for a trained token is dropped; RL prompts over --seq-length "
                     "are dropped, never cut; pretraining documents are never cut")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="preprocess_data.py", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="file, directory, glob, or FORMAT@PATH (json, jsonl, parquet, arrow)")
    p.add_argument("--output-prefix", required=True, help="output path prefix (directories are created)")
    p.add_argument("--handler-name", default="GeneralPretrainHandler")
    p.add_argument("--map-keys", default=None, help='JSON: logical key -> column, e.g. {"prompt":"question"}')
    p.add_argument("--prompt-type", default="empty", help="template name in templates.json, or chat_template")
    p.add_argument("--templates-file", default=None, help="templates.json (default configs/finetune/templates.json)")
    p.add_argument("--tokenizer-type", default="PretrainedFromHF", choices=["PretrainedFromHF"])
    p.add_argument("--tokenizer-name-or-path", required=True)
    p.add_argument("--seq-length", type=int, default=None, help="truncate (see the policy in the summary)")
    p.add_argument("--pack", action="store_true", help="greedy-pack SFT samples into --seq-length sequences")
    p.add_argument("--dataset-additional-keys", nargs="*", default=[], help="extra columns ('labels' = the response)")
    p.add_argument("--skip-invalid", action="store_true", help="skip and count invalid rows instead of stopping")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--chunk-timeout", type=float, default=600.0,
                   help="seconds a worker may spend on one chunk before the run stops (workers > 1)")
    p.add_argument("--allow-empty", action="store_true", help="write an empty dataset when the input has no rows")
    p.add_argument("--chunk-size", type=int, default=1000, help="rows per task sent to a worker")
    p.add_argument("--log-interval", type=int, default=10000, help="log a progress line every K samples")
    p.add_argument("--no-progress-bar", action="store_true")
    return p


def _check_args(args) -> dict:
    if args.templates_file:
        os.environ["MINDR1_TEMPLATES"] = os.path.abspath(args.templates_file)  # inherited by the workers
    try:
        map_keys = json.loads(args.map_keys) if args.map_keys else {}
    except json.JSONDecodeError as exc:
        raise DataError(f"--map-keys is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(map_keys, dict):
        raise DataError("--map-keys must be a JSON object")
    if args.pack and not args.seq_length:
        raise DataError("--pack needs --seq-length")
    if args.workers < 1 or args.chunk_size < 1 or args.log_interval < 1:
        raise DataError("--workers, --chunk-size and --log-interval must be positive")
    if not args.chunk_timeout > 0:
        raise DataError(f"--chunk-timeout must be > 0 seconds (got {args.chunk_timeout})")
    return map_keys


def _build(args, map_keys):
    from mindr1.data.handlers import get_handler
    from mindr1.data.templates import CHAT_TEMPLATE, get_template
    from mindr1.data.tokenizer import TextTokenizer

    cls = get_handler(args.handler_name)
    if cls.kind != "pretrain":
        if args.prompt_type != CHAT_TEMPLATE:
            get_template(args.prompt_type)
    if args.pack and cls.kind != "instruction":
        raise DataError(f"--pack applies to SFT handlers, not {args.handler_name}")
    if args.dataset_additional_keys and cls.kind != "prompt":
        raise DataError(f"--dataset-additional-keys applies to R1AlpacaStyleInstructionHandler, not {args.handler_name}")
    tokenizer = TextTokenizer(args.tokenizer_name_or_path)
    if args.prompt_type == CHAT_TEMPLATE and cls.kind != "pretrain" and not tokenizer.chat_template:
        raise DataError(f"--prompt-type chat_template: tokenizer {args.tokenizer_name_or_path} has no chat template")
    handler = cls(map_keys, args.prompt_type, tokenizer, args.dataset_additional_keys)
    names = {"instruction": ["input_ids", "attention_mask", "labels"],
             "prompt": ["input_ids", "attention_mask"] + args.dataset_additional_keys,
             "pretrain": ["text"]}[cls.kind]
    return handler, tokenizer, names


class Progress:
    """A tqdm bar (samples/s, tokens/s, ETA) on a terminal, and a log line every K samples."""

    def __init__(self, total: int | None, interval: int, bar: bool):
        from tqdm import tqdm

        self.start, self.samples, self.tokens, self.rows, self.total = time.perf_counter(), 0, 0, 0, total
        self.interval, self._next_log = interval, interval
        self.bar = tqdm(total=total, unit="row", disable=None if bar else True, dynamic_ncols=True)

    def update(self, rows: int, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens
        self.rows += rows
        self.bar.update(rows)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(tok_s=f"{self.tokens / elapsed:,.0f}", refresh=False)
        if self.samples >= self._next_log:
            self._next_log += self.interval
            done = self.rows
            eta = (self.total - done) * elapsed / done if self.total and done else float("nan")
            self.bar.write(f"[preprocess] {self.samples:,} samples, {self.samples / elapsed:,.0f} samples/s, "
                           f"{self.tokens / elapsed:,.0f} tokens/s, ETA {eta:,.0f} s", file=sys.stderr)

    def close(self) -> float:
        self.bar.close()
        return time.perf_counter() - self.start


def _fail_message(result, error) -> str:
    number, reason, detail = error
    return (f"{result.path} {result.unit} {number}: {reason}: {detail} "
            "(rerun with --skip-invalid to skip and count such rows)")


def _write_summary(path: str, summary: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    os.replace(tmp, path)


def _consume(args, results, out, progress) -> dict:
    counts = Counter()
    skipped = Counter()
    for result in results:
        if result.errors and not args.skip_invalid:
            raise DataError(_fail_message(result, result.errors[0]))
        skipped.update(reason for _, reason, _ in result.errors)
        out.add(result.arrays)
        counts.update(rows=result.rows, samples=result.samples, tokens=result.tokens,
                      truncated=result.truncated, dropped_too_long=result.dropped_too_long)
        progress.update(result.rows, result.samples, result.tokens)
    counts["skipped"] = dict(skipped)
    return counts


def run(args) -> dict:
    """Preprocess per ``args``; returns the summary (also written to ``PREFIX_summary.json``)."""
    from mindr1.data.output import OutputSet, Packer
    from mindr1.data.pipeline import WorkerState, process_chunk, set_state
    from mindr1.data.pool import chunk_results
    from mindr1.data.sources import count_rows, iter_chunks, resolve_inputs

    map_keys = _check_args(args)
    files = resolve_inputs(args.input)
    handler, tokenizer, names = _build(args, map_keys)
    total = count_rows(files)
    os.makedirs(os.path.dirname(os.path.abspath(args.output_prefix)), exist_ok=True)
    set_state(WorkerState(handler, tokenizer, args.seq_length))
    packer = Packer(args.seq_length, tokenizer.pad_id) if args.pack else None
    out = OutputSet(args.output_prefix, handler.kind, names, tokenizer.vocab_size, packer)
    progress = Progress(total, args.log_interval, not args.no_progress_bar)
    results = chunk_results(process_chunk, iter_chunks(files, args.chunk_size), args.workers, args.chunk_timeout)
    try:
        counts = _consume(args, results, out, progress)
        if counts["rows"] == 0 and not args.allow_empty:
            raise DataError(f"--input {args.input}: no rows in {', '.join(p for p, _ in files)} "
                            "(pass --allow-empty to write an empty dataset)")
        prefixes = out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        results.close()  # stops the worker pool now, also on errors
        elapsed = progress.close()
    skipped = counts.pop("skipped")
    summary = {
        "handler": args.handler_name, "template": args.prompt_type if handler.kind != "pretrain" else None,
        "tokenizer": tokenizer.describe(), "inputs": [p for p, _ in files], "map_keys": handler.keys,
        "additional_keys": args.dataset_additional_keys, "datasets": prefixes,
        "rows": counts["rows"], "samples": counts["samples"], "tokens": counts["tokens"],
        "skipped": {"total": sum(skipped.values()), "by_reason": skipped},
        "truncated": counts["truncated"], "dropped_too_long": counts["dropped_too_long"],
        "seq_length": args.seq_length, "truncation_policy": TRUNCATION_POLICY,
        "packed": bool(args.pack), "packed_sequences": packer.sequences if packer else None,
        "workers": args.workers, "elapsed_s": round(elapsed, 3),
        "samples_per_s": round(counts["samples"] / elapsed, 1), "tokens_per_s": round(counts["tokens"] / elapsed, 1),
    }
    _write_summary(f"{args.output_prefix}_summary.json", summary)
    return summary


def _stop_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through run()'s cleanup: temporary files are removed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mindr1.data.templates import TemplateError

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        summary = run(args)
    except (DataError, TemplateError, ValueError, OSError) as exc:  # OSError: unreadable input, full disk
        print(f"preprocess_data: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    skipped = summary["skipped"]["total"]
    print(f"preprocess_data: {summary['samples']:,} samples, {summary['tokens']:,} tokens -> "
          f"{args.output_prefix}_* ({summary['samples_per_s']:,.0f} samples/s, {summary['tokens_per_s']:,.0f} "
          f"tokens/s; skipped {skipped}, truncated {summary['truncated']}, "
          f"dropped as too long {summary['dropped_too_long']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

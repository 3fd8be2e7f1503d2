"""R1-distill rows -> cold-start SFT rows (``tools/annotate_r1.py``).

OpenR1-Math style rows (``problem``, ``solution``, ``answer``, ``correctness_count``; names
mappable with ``--map-keys``) become Alpaca rows whose output is the recipe's format::

    {"instruction": PROBLEM, "output": "<think>SOLUTION</think>\\n<answer>\\boxed{ANSWER}</answer>", "answer": ANSWER}

Rows with ``correctness_count`` below ``--min-correctness`` are filtered out (counted). A solution
that already carries ``<think>`` tags and an answer already in ``\\boxed{}`` are not wrapped twice.
Invalid rows stop the run naming file and line unless ``--skip-invalid``; the output is written
under a temporary name and renamed when complete.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter

from mindr1.data.handlers import RowError, _text
from mindr1.data.sources import DataError, iter_chunks, resolve_inputs

DEFAULT_KEYS = {"problem": "problem", "solution": "solution", "answer": "answer",
                "correctness_count": "correctness_count"}
_BOXED = re.compile(r"^\\boxed\{.*\}$", re.S)


def format_output(solution: str, answer: str) -> str:
    """``<think>SOLUTION</think>\\n<answer>\\boxed{ANSWER}</answer>``."""
    thought = solution.strip()
    if thought.startswith("<think>") and "</think>" in thought:
        thought = thought[len("<think>"): thought.index("</think>")].strip()
    answer = answer.strip()
    boxed = answer if _BOXED.match(answer) else "\\boxed{" + answer + "}"
    return f"<think>{thought}</think>\n<answer>{boxed}</answer>"


def annotate_row(row, keys: dict, min_correctness: int) -> dict | None:
    """One SFT row, or None when filtered by correctness; RowError when invalid."""
    if not isinstance(row, dict):
        raise RowError("wrong_type", f"expected a JSON object, got {type(row).__name__}")
    problem = _text(row, keys["problem"], "problem", required=True)
    solution = _text(row, keys["solution"], "solution", required=True)
    answer = _text(row, keys["answer"], "answer", required=True, scalar_ok=True)
    count_key = keys.get("correctness_count")
    if count_key and count_key in row and row[count_key] is not None:
        count = row[count_key]
        if not isinstance(count, int) or isinstance(count, bool):
            raise RowError("wrong_type", f"key {count_key!r} must be an integer, got {type(count).__name__}")
        if count < min_correctness:
            return None
    return {"instruction": problem, "output": format_output(solution, answer), "answer": answer}


def _rows(chunk):
    if chunk.rows is not None:
        yield from enumerate(chunk.rows, chunk.start)
        return
    for number, raw in enumerate(chunk.lines(), chunk.start):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, RowError("non_utf8", "bytes that are not UTF-8")
            continue
        if text.strip():
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, RowError("malformed_json", exc.msg)


def annotate(input_spec: str, output: str, keys: dict, min_correctness: int = 1, skip_invalid: bool = False) -> dict:
    counts = Counter()
    tmp = f"{output}.tmp-{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for chunk in iter_chunks(resolve_inputs(input_spec), 1000):
                for number, row in _rows(chunk):
                    try:
                        if isinstance(row, RowError):
                            raise row
                        sft = annotate_row(row, keys, min_correctness)
                    except RowError as exc:
                        if not skip_invalid:
                            raise DataError(f"{chunk.path} {chunk.unit} {number}: {exc}") from None
                        counts[f"skipped_{exc.reason}"] += 1
                        continue
                    if sft is None:
                        counts["filtered_correctness"] += 1
                        continue
                    fh.write(json.dumps(sft, ensure_ascii=False) + "\n")
                    counts["written"] += 1
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="annotate_r1.py", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="file, directory, glob or FORMAT@PATH (json, jsonl, parquet, arrow)")
    p.add_argument("--output", required=True, help="output .jsonl (Alpaca rows: instruction, output, answer)")
    p.add_argument("--map-keys", default=None, help=f"JSON, defaults {json.dumps(DEFAULT_KEYS)}")
    p.add_argument("--min-correctness", type=int, default=1, help="keep rows with correctness_count >= this")
    p.add_argument("--skip-invalid", action="store_true")
    args = p.parse_args(argv)
    try:
        keys = {**DEFAULT_KEYS, **(json.loads(args.map_keys) if args.map_keys else {})}
        counts = annotate(args.input, args.output, keys, args.min_correctness, args.skip_invalid)
    except (DataError, ValueError) as exc:
        print(f"annotate_r1: error: {exc}", file=sys.stderr)
        return 1
    print(f"annotate_r1: {json.dumps(counts)} -> {args.output}", file=sys.stderr)
    return 0

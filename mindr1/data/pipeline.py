"""Worker side of preprocessing: one chunk of raw rows -> token arrays, errors and counts.

A chunk is decoded, validated and rendered row by row, then every text of the chunk is tokenized
in one batch call (the tokenizer's fast path), then assembled into flat int32 arrays with a length
per sample, which pickle cheaply back to the writer process.

Truncation policy (``--seq-length``), applied here:
- instruction samples longer than the limit lose their tail (the end of the response); a sample
  whose untrained prompt leaves no room for one trained token is dropped (``dropped_too_long``);
- RL prompts longer than the limit are dropped (cutting a question changes it), never cut;
- pretraining documents are never cut (Megatron's GPT dataset splits documents itself).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import numpy as np

from mindr1.data.handlers import RowError
from mindr1.data.sources import Chunk

IGNORE = -100


@dataclass
class ChunkResult:
    path: str
    unit: str
    rows: int = 0
    errors: list = field(default_factory=list)        # (item number, reason, detail), in order
    arrays: dict = field(default_factory=dict)         # name -> (flat int32, lengths int32)
    truncated: int = 0
    dropped_too_long: int = 0
    samples: int = 0
    tokens: int = 0


@dataclass
class WorkerState:
    handler: object
    tokenizer: object
    seq_length: int | None


_STATE: WorkerState | None = None  # set before the pool forks, so workers inherit the tokenizer


def set_state(state: WorkerState) -> None:
    global _STATE
    _STATE = state


def _decode_rows(chunk: Chunk, result: ChunkResult) -> list[tuple[int, object]]:
    if chunk.rows is not None:
        return list(enumerate(chunk.rows, chunk.start))
    rows = []
    for number, raw in enumerate(chunk.lines(), chunk.start):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            result.errors.append((number, "non_utf8", f"bytes that are not UTF-8 at column {exc.start + 1}"))
            continue
        if not text.strip():
            continue  # blank lines are not rows
        try:
            rows.append((number, json.loads(text)))
        except json.JSONDecodeError as exc:
            result.errors.append((number, "malformed_json", f"{exc.msg} at column {exc.colno}"))
        except RecursionError:
            result.errors.append((number, "too_deep", "JSON nested deeper than the parser allows "
                                                      f"(~{sys.getrecursionlimit()} levels)"))
    return rows


def _convert(rows, result: ChunkResult, fn) -> list[tuple[int, object]]:
    items = []
    for number, row in rows:
        try:
            items.append((number, fn(row)))
        except RowError as exc:
            result.errors.append((number, exc.reason, exc.detail))
        except RecursionError:  # a deeply nested value met something that walks it
            result.errors.append((number, "too_deep", "value nested too deeply"))
    return items


def _pack_arrays(result: ChunkResult, name: str, flat: list, lengths: list) -> None:
    result.arrays[name] = (np.array(flat, dtype=np.int32), np.array(lengths, dtype=np.int32))


def _truncate(ids, labels, lengths, limit: int, result: ChunkResult):
    """Cut samples to ``limit`` tokens; drop those with no trained token left (see module docstring)."""
    sample_of_token = np.repeat(np.arange(lengths.size), lengths)
    starts = np.cumsum(lengths) - lengths
    keep = np.arange(ids.size) - np.repeat(starts, lengths) < limit
    trained = np.bincount(sample_of_token[keep & (labels != IGNORE)], minlength=lengths.size) > 0
    long = lengths > limit
    drop = long & ~trained
    result.truncated += int((long & trained).sum())
    result.dropped_too_long += int(drop.sum())
    keep &= ~np.repeat(drop, lengths)
    return ids[keep], labels[keep], np.minimum(lengths, limit)[~drop]


def _instruction(items, result: ChunkResult, state: WorkerState) -> None:
    # Vectorised: one batch call for every segment of the chunk, then numpy, no per-token Python.
    texts, flags, n_segs = [], [], []
    for _, segs in items:
        n_segs.append(len(segs))
        for text, trained in segs:
            texts.append(text)
            flags.append(trained)
    ids, piece_lengths = state.tokenizer.encode_batch_flat(texts)
    labels = np.where(np.repeat(np.array(flags, dtype=bool), piece_lengths), ids, IGNORE).astype(np.int32)
    piece_sample = np.repeat(np.arange(len(items)), n_segs)
    lengths = np.bincount(piece_sample, weights=piece_lengths, minlength=len(items)).astype(np.int64)
    if state.seq_length and (lengths > state.seq_length).any():
        ids, labels, lengths = _truncate(ids, labels, lengths, state.seq_length, result)
    lengths = lengths.astype(np.int32)
    result.arrays = {"input_ids": (ids, lengths), "labels": (labels, lengths)}
    result.samples, result.tokens = int(lengths.size), int(ids.size)


def _prompts(items, result: ChunkResult, state: WorkerState) -> None:
    keys = state.handler.additional_keys
    texts = [text for _, (prompt, extras) in items for text in [prompt] + [extras[k] for k in keys]]
    ids_iter = iter(state.tokenizer.encode_batch(texts))
    flat = {name: ([], []) for name in ["input_ids"] + keys}
    for _ in items:
        pieces = [next(ids_iter) for _ in range(1 + len(keys))]
        if state.seq_length and len(pieces[0]) > state.seq_length:
            result.dropped_too_long += 1
            continue
        for name, piece in zip(["input_ids"] + keys, pieces):
            flat[name][0].extend(piece)
            flat[name][1].append(len(piece))
    for name, (ids, lengths) in flat.items():
        _pack_arrays(result, name, ids, lengths)
    result.samples = len(flat["input_ids"][1])
    result.tokens = len(flat["input_ids"][0])


def _pretrain(items, result: ChunkResult, state: WorkerState) -> None:
    eos = state.tokenizer.eos_id
    ids, lengths = state.tokenizer.encode_batch_flat([text for _, text in items])
    if eos is not None:  # EOS after every document
        ids, lengths = np.insert(ids, np.cumsum(lengths), eos).astype(np.int32), lengths + 1
    result.arrays = {"text": (ids, lengths.astype(np.int32))}
    result.samples, result.tokens = int(lengths.size), int(ids.size)


def process_chunk(chunk: Chunk) -> ChunkResult:
    """Decode, validate, render and tokenize one chunk (runs in a worker process)."""
    state = _STATE
    result = ChunkResult(chunk.path, chunk.unit)
    rows = _decode_rows(chunk, result)
    result.rows = len(rows) + len(result.errors)
    handler = state.handler
    if handler.kind == "instruction":
        _instruction(_convert(rows, result, handler.segments), result, state)
    elif handler.kind == "prompt":
        _prompts(_convert(rows, result, handler.prompt), result, state)
    else:
        _pretrain(_convert(rows, result, handler.text), result, state)
    result.errors.sort(key=lambda e: e[0])
    return result

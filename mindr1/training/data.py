"""SFT data: a deterministic sample order by iteration, and micro-batches padded to their own longest sample.

Sample ``j`` of the global batch of iteration ``i`` is item ``i * global_batch_size + j`` of one
blended dataset of ``train_iters * global_batch_size`` items (seeded), so the data position of a
run is just its iteration: resuming at iteration ``i`` reads exactly what an uninterrupted run
would. Each DP rank takes its contiguous share of the global batch, cut into micro-batches.
"""
from __future__ import annotations

import numpy as np
import torch

from mindr1.training.schedule import causal_batch


def build_sft_dataset(data_path: str, dataset_category: str | None, num_samples: int, seed: int):
    from mindr1.data.blend import build_blend
    from mindr1.data.datasets import InstructionDataset

    return build_blend(data_path, dataset_category, num_samples, seed, InstructionDataset)


def collate(samples: list[dict], seq_length: int, pad_id: int = 0) -> dict:
    """Samples -> a next-token micro-batch, padded to the longest sample (plus one), cut to seq_length.

    ``input_ids``/``labels`` of a sample are aligned (labels -100 on prompt tokens); the shift
    happens here. A label is also masked where the next token belongs to another packed sample.
    """
    longest = min(max(len(s["input_ids"]) for s in samples), seq_length + 1)
    B, S = len(samples), longest - 1
    tokens = np.full((B, S), pad_id, dtype=np.int64)
    labels = np.full((B, S), -100, dtype=np.int64)
    segments = np.zeros((B, S), dtype=np.int64)
    packed = False
    for b, s in enumerate(samples):
        ids, lab = s["input_ids"][:longest], s["labels"][:longest]
        seg = s.get("segment_ids")
        seg = np.ones(len(ids), dtype=np.int64) if seg is None else seg[:longest].astype(np.int64)
        packed = packed or bool((seg[seg > 0] != 1).any())
        n = len(ids) - 1
        tokens[b, :n] = ids[:-1]
        shifted = lab[1:].copy()
        shifted[seg[1:] != seg[:-1]] = -100
        labels[b, :n] = shifted
        segments[b, :n] = seg[:-1]
    tokens_t, labels_t = torch.from_numpy(tokens), torch.from_numpy(labels)
    return causal_batch(tokens_t, labels_t, segment_ids_BS=torch.from_numpy(segments) if packed else None)


def loss_token_count(sample: dict, seq_length: int) -> int:
    """How many loss tokens :func:`collate` gives ``sample``: its labels after the shift, cut at
    ``seq_length + 1`` tokens, never predicting across packed samples. No tensor is built."""
    n = min(len(sample["input_ids"]), seq_length + 1)
    keep = np.asarray(sample["labels"][1:n]) != -100
    seg = sample.get("segment_ids")
    if seg is not None:
        seg = np.asarray(seg[:n])
        keep &= seg[1:] == seg[:-1]
    return int(keep.sum())


def iteration_batch(dataset, iteration: int, global_batch_size: int, micro_batch_size: int, dp_rank: int,
                    dp_size: int, seq_length: int, pad_id: int = 0) -> tuple[list[dict], float, int]:
    """This DP rank's micro-batches of ``iteration``, the global count of loss tokens and of real tokens.

    Every rank counts the loss tokens of the whole global batch from the samples themselves (cheap,
    and no collective), and collates only its own micro-batches (their masks are the expensive part).
    """
    start = iteration * global_batch_size
    samples = [dataset[start + j] for j in range(global_batch_size)]
    global_tokens = float(sum(loss_token_count(s, seq_length) for s in samples))
    real_tokens = sum(min(len(s["input_ids"]), seq_length + 1) - 1 for s in samples)
    per_rank = (global_batch_size // micro_batch_size) // dp_size
    mine = range(dp_rank * per_rank * micro_batch_size, (dp_rank + 1) * per_rank * micro_batch_size, micro_batch_size)
    micro = [collate(samples[k:k + micro_batch_size], seq_length, pad_id) for k in mine]
    return micro, global_tokens, real_tokens

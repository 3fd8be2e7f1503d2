"""Readers for training over the files of ``tools/preprocess_data.py`` (numpy only, no torch).

- :class:`InstructionDataset` (SFT): ``{"input_ids", "labels", "segment_ids"}``; labels are aligned
  with input_ids (not shifted) and -100 on prompt and padding positions; ``segment_ids`` is the
  1-based sample id per token (all 1 unpacked, 0 on padding) so attention and loss stay in a sample.
- :class:`PromptDataset` (RL): ``{"prompt_ids", "ground_truth", **other keys}``, the texts
  detokenised with the tokenizer recorded in ``PREFIX_summary.json`` (or the one given).
- :class:`TextDataset` (pretraining): the token ids of each document.
"""
from __future__ import annotations

import json
import os

import numpy as np

from mindr1.data.indexed import IndexedReader


def _file(prefix: str, name: str) -> str:
    return f"{prefix}_packed_{name}_document"


def read_summary(prefix: str) -> dict:
    """``PREFIX_summary.json`` of a preprocessed dataset ({} when absent)."""
    path = f"{prefix}_summary.json"
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class InstructionDataset:
    """SFT samples (or packed sequences) of ``PREFIX_packed_*_document``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.input_ids = IndexedReader(_file(prefix, "input_ids"))
        self.labels = IndexedReader(_file(prefix, "labels"))
        self.segments = IndexedReader(_file(prefix, "attention_mask"))
        if not len(self.input_ids) == len(self.labels) == len(self.segments):
            raise ValueError(f"{prefix}: input_ids, labels and attention_mask files differ in length "
                             f"({len(self.input_ids)}, {len(self.labels)}, {len(self.segments)})")

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i].astype(np.int64),
                "labels": self.labels[i].astype(np.int64),
                "segment_ids": self.segments[i].astype(np.int32)}

    @property
    def lengths(self) -> np.ndarray:
        return self.input_ids.lengths


def _tokenizer_for(prefix: str, tokenizer_dir):
    from mindr1.data.tokenizer import TextTokenizer

    if tokenizer_dir is None:
        tokenizer_dir = read_summary(prefix).get("tokenizer", {}).get("path")
        if tokenizer_dir is None:
            raise ValueError(f"{prefix}_summary.json records no tokenizer; pass tokenizer_dir")
    return TextTokenizer(tokenizer_dir)


class PromptDataset:
    """RL prompts: token ids of the rendered prompt, ground truth and extra columns as strings."""

    def __init__(self, prefix: str, tokenizer_dir=None, keys: list[str] | None = None):
        self.prefix = prefix
        self.prompts = IndexedReader(_file(prefix, "input_ids"))
        if keys is None:
            keys = read_summary(prefix).get("additional_keys")
        if keys is None:  # no summary: every extra file present beside the prompts
            keys = [k for k in ("labels",) if os.path.exists(_file(prefix, k) + ".idx")]
        self.extras = {k: IndexedReader(_file(prefix, k)) for k in keys}
        self.tokenizer = _tokenizer_for(prefix, tokenizer_dir) if self.extras else None

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict:
        item = {"prompt_ids": self.prompts[i].astype(np.int64)}
        for key, reader in self.extras.items():
            item["ground_truth" if key == "labels" else key] = self.tokenizer.decode(reader[i])
        return item


class TextDataset:
    """Pretraining documents of ``PREFIX_text_document`` (PREFIX is the --output-prefix)."""

    def __init__(self, prefix: str):
        self.reader = IndexedReader(f"{prefix}_text_document")

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.reader[i].astype(np.int64)

"""Writer side of preprocessing: the set of indexed files of one run, greedy packing, commit/abort.

File names (the contract the trainers read):
- instruction and RL-prompt data: ``PREFIX_packed_{input_ids,attention_mask,labels}_document``,
  plus ``PREFIX_packed_<key>_document`` per extra ``--dataset-additional-keys`` entry;
- plain text: ``PREFIX_text_document``.

``attention_mask`` holds the 1-based id of the sample each token belongs to (all 1 unpacked; 0 is
padding in packed sequences), so readers rebuild sample boundaries and attention/loss never cross
samples. Everything is written under temporary names and renamed only when the whole run succeeded.
"""
from __future__ import annotations

import numpy as np

from mindr1.data.indexed import IndexedWriter, optimal_token_dtype
from mindr1.data.pipeline import IGNORE


def dataset_prefix(output_prefix: str, name: str, kind: str) -> str:
    if kind == "pretrain":
        return f"{output_prefix}_text_document"
    return f"{output_prefix}_packed_{name}_document"


class Packer:
    """Greedy first-fit packing of samples into sequences of exactly ``seq_length`` tokens.

    Up to ``max_open`` sequences stay open; a sample goes into the first one with room, and when
    none has room and the limit is reached the fullest is closed. Padding: pad id, label -100,
    segment 0. Deterministic for a given input order.
    """

    def __init__(self, seq_length: int, pad_id: int, max_open: int = 64):
        self.seq_length, self.pad_id, self.max_open = seq_length, pad_id, max_open
        self._open: list[list] = []          # [used, [(ids, labels), ...]]
        self._done: list[tuple] = []
        self.sequences = 0

    def add(self, ids: np.ndarray, labels: np.ndarray) -> None:
        n = ids.size
        for entry in self._open:
            if entry[0] + n <= self.seq_length:
                entry[0] += n
                entry[1].append((ids, labels))
                return
        if len(self._open) >= self.max_open:
            fullest = max(range(len(self._open)), key=lambda i: self._open[i][0])
            self._close(self._open.pop(fullest))
        self._open.append([n, [(ids, labels)]])

    def _close(self, entry) -> None:
        used, samples = entry
        pad = self.seq_length - used
        ids = np.concatenate([s[0] for s in samples] + [np.full(pad, self.pad_id, np.int32)])
        labels = np.concatenate([s[1] for s in samples] + [np.full(pad, IGNORE, np.int32)])
        segs = np.concatenate([np.full(s[0].size, k, np.int32) for k, s in enumerate(samples, 1)]
                              + [np.zeros(pad, np.int32)])
        self._done.append((ids, labels, segs))
        self.sequences += 1

    def take(self, final: bool = False) -> list[tuple]:
        if final:
            for entry in self._open:
                self._close(entry)
            self._open = []
        done, self._done = self._done, []
        return done


class OutputSet:
    """The indexed files of one run; ``add`` takes a worker's arrays, ``commit``/``abort`` end it."""

    def __init__(self, output_prefix: str, kind: str, names: list[str], vocab_size: int,
                 pack: Packer | None = None):
        self.kind, self.pack = kind, pack
        dtype = optimal_token_dtype(vocab_size) if kind == "pretrain" else np.int32
        self.writers = {name: IndexedWriter(dataset_prefix(output_prefix, name, kind), dtype) for name in names}

    def add(self, arrays: dict) -> None:
        if self.pack is not None:
            self._add_packed(arrays)
            return
        for name, (flat, lengths) in arrays.items():
            self.writers[name].add_documents(flat, lengths)
        if "attention_mask" in self.writers:  # one sample per sequence: segment id 1 everywhere
            flat, lengths = arrays["input_ids"]
            self.writers["attention_mask"].add_documents(np.ones(flat.size, np.int32), lengths)

    def _add_packed(self, arrays: dict, final: bool = False) -> None:
        if arrays:
            flat, lengths = arrays["input_ids"]
            bounds = np.cumsum(lengths)[:-1]
            for ids, labels in zip(np.split(flat, bounds), np.split(arrays["labels"][0], bounds)):
                self.pack.add(ids, labels)
        done = self.pack.take(final)
        if done:
            lengths = np.full(len(done), self.pack.seq_length, np.int32)
            for name, col in (("input_ids", 0), ("labels", 1), ("attention_mask", 2)):
                self.writers[name].add_documents(np.concatenate([d[col] for d in done]), lengths)

    def commit(self) -> list[str]:
        if self.pack is not None:
            self._add_packed({}, final=True)
        for writer in self.writers.values():
            writer.finalize()
        for writer in self.writers.values():
            writer.commit()
        return [w.prefix for w in self.writers.values()]

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

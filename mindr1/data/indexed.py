"""Megatron's indexed dataset format (``MMIDIDX``), written and read with numpy only.

``PREFIX.bin`` holds the tokens of every sequence back to back; ``PREFIX.idx`` is::

    b"MMIDIDX\\x00\\x00"  <Q version=1>  <B dtype code>  <Q sequence count>  <Q document count>
    int32[sequences]   sequence lengths
    int64[sequences]   byte offset of each sequence in .bin
    int64[documents]   document boundaries as sequence indices (starting with 0)

This is exactly what ``megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder`` writes and
``IndexedDataset`` reads (tested against it). Our own writer avoids importing megatron and torch
(seconds of start-up) in preprocessing. Writes go to temporary names; :meth:`IndexedWriter.commit`
renames them, :meth:`IndexedWriter.abort` removes them, so no partial .bin/.idx is ever visible.
"""
from __future__ import annotations

import os
import struct

import numpy as np

HEADER = b"MMIDIDX\x00\x00"
_DTYPE_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5,
                np.float64: 6, np.float32: 7, np.uint16: 8}
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}


def optimal_token_dtype(vocab_size: int):
    """Megatron's choice for token ids: uint16 below 65,500 ids, int32 above."""
    return np.uint16 if vocab_size < 65500 else np.int32


class IndexedWriter:
    """Appends documents (one sequence each) to ``prefix.bin``/``prefix.idx`` under temporary names."""

    def __init__(self, prefix: str, dtype=np.int32):
        self.prefix = prefix
        self.dtype = np.dtype(dtype).type
        if self.dtype not in _DTYPE_CODES:
            raise ValueError(f"{prefix}: dtype {dtype} is not one Megatron's index can record")
        suffix = f".tmp-{os.getpid()}"
        self._bin_tmp, self._idx_tmp = f"{prefix}.bin{suffix}", f"{prefix}.idx{suffix}"
        self._bin = open(self._bin_tmp, "wb")
        self._lengths: list[np.ndarray] = []
        self.tokens = 0

    def add_documents(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Append ``len(lengths)`` documents whose tokens are ``flat`` back to back."""
        flat = np.ascontiguousarray(flat, dtype=self.dtype)
        lengths = np.asarray(lengths, dtype=np.int32)
        if int(lengths.sum()) != flat.size:
            raise ValueError(f"{self.prefix}: lengths sum to {int(lengths.sum())} but {flat.size} tokens given")
        self._bin.write(memoryview(flat).cast("B"))  # the array's own buffer, no copy
        self._lengths.append(lengths)
        self.tokens += flat.size

    def finalize(self) -> None:
        """Close .bin and write .idx (still under temporary names)."""
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        itemsize = np.dtype(self.dtype).itemsize
        pointers = np.zeros(lengths.size, dtype=np.int64)
        if lengths.size > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * itemsize, out=pointers[1:])
        documents = np.arange(lengths.size + 1, dtype=np.int64)
        with open(self._idx_tmp, "wb") as fh:
            fh.write(HEADER)
            fh.write(struct.pack("<Q", 1))
            fh.write(struct.pack("<B", _DTYPE_CODES[self.dtype]))
            fh.write(struct.pack("<Q", lengths.size))
            fh.write(struct.pack("<Q", documents.size))
            fh.write(lengths.tobytes())
            fh.write(pointers.tobytes())
            fh.write(documents.tobytes())

    def commit(self) -> None:
        os.replace(self._bin_tmp, self.prefix + ".bin")
        os.replace(self._idx_tmp, self.prefix + ".idx")

    def abort(self) -> None:
        if not self._bin.closed:
            self._bin.close()
        for path in (self._bin_tmp, self._idx_tmp):
            if os.path.exists(path):
                os.remove(path)


class IndexedReader:
    """Memory-mapped reader of ``prefix.bin``/``prefix.idx``; ``reader[i]`` is sequence ``i``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        idx_path = prefix + ".idx"
        try:
            with open(idx_path, "rb") as fh:
                head = fh.read(34)
        except FileNotFoundError:
            raise FileNotFoundError(f"indexed dataset not found: {idx_path}") from None
        if len(head) < 34 or head[:9] != HEADER:
            raise ValueError(f"{idx_path}: not a Megatron MMIDIDX index (bad header)")
        version, code = struct.unpack("<Q", head[9:17])[0], head[17]
        if version != 1 or code not in _CODE_DTYPES:
            raise ValueError(f"{idx_path}: unsupported version {version} or dtype code {code}")
        self.dtype = _CODE_DTYPES[code]
        count, doc_count = struct.unpack("<QQ", head[18:34])
        idx = np.memmap(idx_path, mode="r", dtype=np.uint8)
        self.lengths = np.frombuffer(idx, dtype=np.int32, count=count, offset=34)
        self.pointers = np.frombuffer(idx, dtype=np.int64, count=count, offset=34 + 4 * count)
        self.document_indices = np.frombuffer(idx, dtype=np.int64, count=doc_count, offset=34 + 12 * count)
        size = os.path.getsize(prefix + ".bin")
        self._bin = np.memmap(prefix + ".bin", mode="r", dtype=np.uint8) if size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return self.lengths.size

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.prefix}: index {i} out of range for {len(self)} sequences")
        i = i % len(self)
        return np.frombuffer(self._bin, dtype=self.dtype, count=int(self.lengths[i]), offset=int(self.pointers[i]))

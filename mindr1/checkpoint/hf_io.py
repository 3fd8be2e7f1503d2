"""Lazy reading and streaming writing of HF checkpoints (safetensors, sharded, or pytorch_model.bin).

Reading opens a safetensors file per request (``safe_open`` parses only the header, then maps the
file): nothing stays mapped between requests, so resident memory is the tensors the caller keeps,
not the files it has touched. Writing buffers tensors up to ``max_shard_bytes`` and writes each
safetensors file as soon as it is full; the index is written once the total is known.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mindr1.checkpoint.layout import CheckpointError, load_shard, write_error

SAFE_INDEX, SAFE_SINGLE = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN_SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"


class HFCheckpoint:
    """``get_hf(name) -> Tensor`` over an HF directory; ``get_rows`` reads a row range only."""

    def __init__(self, hf_dir: str | Path):
        self.dir = Path(hf_dir)
        if not self.dir.is_dir():
            raise CheckpointError(f"{self.dir}: HF checkpoint directory not found")
        # pytorch_model.bin files are mmap-loaded once each; only the last one is kept open.
        self._bin_cache: dict[str, dict] = {}
        self.weight_map, self.kind = self._index()

    def _index(self) -> tuple[dict[str, str], str]:
        for index, kind in ((SAFE_INDEX, "safetensors"), (BIN_INDEX, "bin")):
            path = self.dir / index
            if path.exists():
                try:
                    weight_map = json.loads(path.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise CheckpointError(f"{path}: not a valid index ({exc!r})") from None
                if not isinstance(weight_map, dict):
                    raise CheckpointError(f"{path}: weight_map must be a mapping of tensor name -> file")
                for name, file in weight_map.items():
                    _check_member(path, name, file)
                missing = sorted({f for f in weight_map.values() if not (self.dir / f).exists()})
                if missing:
                    raise CheckpointError(f"{path}: lists missing file(s) {missing}")
                return weight_map, kind
        if (self.dir / SAFE_SINGLE).exists():
            return {n: SAFE_SINGLE for n in self._safe_keys(SAFE_SINGLE)}, "safetensors"
        if (self.dir / BIN_SINGLE).exists():
            return {n: BIN_SINGLE for n in self._bin(BIN_SINGLE)}, "bin"
        raise CheckpointError(f"{self.dir}: no {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE} or {BIN_INDEX}")

    def _open(self, file: str):
        try:
            return safe_open(str(self.dir / file), framework="pt")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{self.dir / file}: unreadable safetensors file ({exc})") from None

    def _safe_keys(self, file: str) -> list[str]:
        with self._open(file) as f:
            return list(f.keys())

    def _bin(self, file: str) -> dict:
        if file not in self._bin_cache:
            self._bin_cache = {file: load_shard(self.dir / file, mmap=True)}
        return self._bin_cache[file]

    @property
    def names(self) -> list[str]:
        return list(self.weight_map)

    def _file_of(self, name: str) -> str:
        if name not in self.weight_map:
            raise CheckpointError(f"{self.dir}: no tensor named {name}")
        return self.weight_map[name]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, from the file headers only."""
        out = {}
        for file in sorted(set(self.weight_map.values())):
            if self.kind == "bin":
                out.update({k: tuple(v.shape) for k, v in self._bin(file).items()})
                continue
            with self._open(file) as f:
                out.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
        return {k: out[k] for k in self.weight_map if k in out}

    def __call__(self, name: str) -> torch.Tensor:
        file = self._file_of(name)
        if self.kind == "bin":
            return self._bin(file)[name].clone()
        with self._open(file) as f:
            try:
                return f.get_tensor(name)
            except SafetensorError as exc:
                raise CheckpointError(f"{self.dir / file}: cannot read {name} ({exc})") from None

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        file = self._file_of(name)
        if self.kind == "bin":
            return self._bin(file)[name][start:stop].clone()
        with self._open(file) as f:
            return f.get_slice(name)[start:stop]


def _check_member(index: Path, name: str, file) -> None:
    """An index may only name files inside the model directory: no absolute paths, no ``..``
    (checked on the name, so the symlinks of an HF cache snapshot still work)."""
    parts = Path(file).parts if isinstance(file, str) else ()
    if not parts or Path(file).is_absolute() or ".." in parts or "\\" in file or ":" in parts[0]:
        raise CheckpointError(f"{index}: weight_map[{name!r}] = {file!r} does not name a file inside "
                              f"{index.parent}; refused")


def open_hf_checkpoint(hf_dir: str | Path) -> tuple[HFCheckpoint, list[str]]:
    """``(get_hf, names)`` reading tensors lazily from an HF directory."""
    ckpt = HFCheckpoint(hf_dir)
    return ckpt, ckpt.names


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_hf_safetensors(out_dir: Path, tensors: Iterable[tuple[str, torch.Tensor]], max_shard_bytes: int,
                         fsync: bool = False) -> dict[str, str]:
    """Stream ``(name, tensor)`` into ``model-0000i-of-0000N.safetensors`` files plus the index.

    A single file is named ``model.safetensors`` (no index), as ``save_pretrained`` does.
    Returns the weight map.
    """
    files: list[tuple[Path, list[str]]] = []
    umask = os.umask(0)
    os.umask(umask)
    buffer: dict[str, torch.Tensor] = {}
    size = total = 0

    def flush():
        nonlocal buffer, size
        path = out_dir / f".part-{len(files):05d}.safetensors"
        try:
            save_file(buffer, str(path), metadata={"format": "pt"})
            path.chmod(0o666 & ~umask)  # safetensors creates files 0600; an export is an ordinary file
            if fsync:
                _fsync_file(path)
        except (OSError, SafetensorError) as exc:
            error = write_error(path, exc)
            path.unlink(missing_ok=True)
            raise error from None
        files.append((path, list(buffer)))
        buffer, size = {}, 0

    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if buffer and size + nbytes > max_shard_bytes:
            flush()
        buffer[name] = tensor.contiguous()
        size += nbytes
        total += nbytes
    if buffer:
        flush()
    if len(files) == 1:
        files[0][0].rename(out_dir / SAFE_SINGLE)
        return {n: SAFE_SINGLE for n in files[0][1]}
    weight_map = {}
    for i, (path, names) in enumerate(files):
        final = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
        path.rename(out_dir / final)
        weight_map.update({n: final for n in names})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return weight_map

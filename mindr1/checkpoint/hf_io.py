"""Lazy reading and streaming writing of HF checkpoints (safetensors, sharded, or pytorch_model.bin).

Reading opens a safetensors file per request (``safe_open`` parses only the header, then maps the
file): nothing stays mapped between requests, so resident memory is the tensors the caller keeps,
not the files it has touched. Writing buffers tensors up to ``max_shard_bytes`` and writes each
safetensors file as soon as it is full; the index is written once the total is known.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mindr1.checkpoint.layout import CheckpointError, load_shard, write_error

SAFE_INDEX, SAFE_SINGLE = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN_SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"
# safetensors' dtype names and, for the ones the streaming writer lays out itself, their rank in
# safetensors' ordering of a file's tensors (larger rank first, then by name; see _plan_file).
SAFE_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
               "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
               "BOOL": torch.bool}
_STREAM_DTYPES = {torch.float64: ("F64", 3), torch.float32: ("F32", 2), torch.bfloat16: ("BF16", 1),
                  torch.float16: ("F16", 0)}


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

    def dtypes(self) -> dict[str, torch.dtype] | None:
        """Every tensor's dtype, from the file headers only (None if one is not a torch dtype mindr1 knows)."""
        out = {}
        for file in sorted(set(self.weight_map.values())):
            if self.kind == "bin":
                out.update({k: v.dtype for k, v in self._bin(file).items()})
                continue
            with self._open(file) as f:
                for k in f.keys():
                    dtype = SAFE_DTYPES.get(f.get_slice(k).get_dtype())
                    if dtype is None:
                        return None
                    out[k] = dtype
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


def _plan_file(entries: list[tuple[str, tuple[int, ...], torch.dtype, int]]) -> tuple[bytes, dict[str, int]]:
    """The header ``safetensors.torch.save_file(..., metadata={"format": "pt"})`` writes for ``entries``
    and each tensor's byte offset in the file: tensors ordered by dtype (wider first) then by name,
    the JSON header compact and space-padded to a multiple of 8."""
    ordered = sorted(entries, key=lambda e: (-_STREAM_DTYPES[e[2]][1], e[0].encode()))
    header, offsets, pos = {"__metadata__": {"format": "pt"}}, {}, 0
    for name, shape, dtype, nbytes in ordered:
        header[name] = {"dtype": _STREAM_DTYPES[dtype][0], "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        offsets[name] = pos
        pos += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    return len(text).to_bytes(8, "little") + text, {n: start + o for n, o in offsets.items()}


def can_stream(plan: list[tuple[str, tuple[int, ...], torch.dtype]]) -> bool:
    """Whether :func:`write_hf_streaming` lays these tensors out exactly as ``save_file`` would."""
    return bool(plan) and all(d in _STREAM_DTYPES and n.isascii() and n.isprintable() and '"' not in n
                              and "\\" not in n for n, _, d in plan)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def write_hf_streaming(out_dir: Path, plan: list[tuple[str, tuple[int, ...], torch.dtype]],
                       tensors: Iterable[tuple[str, torch.Tensor]], max_shard_bytes: int,
                       fsync: bool = False, workers: int = 2) -> dict[str, str]:
    """:func:`write_hf_safetensors` for tensors whose names, shapes and dtypes are known up front (``plan``,
    in the order ``tensors`` yields them): the same files byte for byte, written without buffering.

    Every file's header and every tensor's offset follow from the plan, so each tensor is written
    (``pwrite``, which releases the GIL) by a small thread pool at its place as soon as it arrives,
    while the caller produces the next; a file is fsynced as soon as its last tensor is in. Resident
    memory: the tensors in flight (at most ``workers + 1``), never a whole output file.
    """
    groups: list[list[tuple[str, tuple[int, ...], torch.dtype, int]]] = []
    size = total = 0
    for name, shape, dtype in plan:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if not groups or (groups[-1] and size + nbytes > max_shard_bytes):
            groups.append([])
            size = 0
        groups[-1].append((name, tuple(shape), dtype, nbytes))
        size += nbytes
        total += nbytes
    n_files = len(groups)
    finals = [SAFE_SINGLE] if n_files == 1 else [f"model-{i + 1:05d}-of-{n_files:05d}.safetensors"
                                                 for i in range(n_files)]
    parts = [out_dir / f".part-{i:05d}.safetensors" for i in range(n_files)]
    where: dict[str, tuple[int, int]] = {}
    left = [len(g) for g in groups]
    fds: list[int] = []
    futures: list[list[Future]] = [[] for _ in groups]
    pool = ThreadPoolExecutor(workers, thread_name_prefix="safetensors")
    in_flight: list[Future] = []

    def finish(i: int, writes: list[Future]) -> None:
        for f in writes:
            f.result()
        try:
            if fsync:
                os.fsync(fds[i])
        except OSError as exc:
            raise write_error(parts[i], exc) from None

    def write(i: int, data: memoryview, offset: int, keep: torch.Tensor) -> None:
        try:
            _pwrite_all(fds[i], data, offset)
        except OSError as exc:
            raise write_error(parts[i], exc) from None

    try:
        for i, group in enumerate(groups):
            head, offsets = _plan_file(group)
            try:
                fds.append(os.open(parts[i], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
                os.ftruncate(fds[i], len(head) + sum(e[3] for e in group))
                _pwrite_all(fds[i], memoryview(head), 0)
            except OSError as exc:
                raise write_error(parts[i], exc) from None
            where.update({name: (i, offsets[name]) for name, *_ in group})
        expected = iter((e, i) for i, g in enumerate(groups) for e in g)
        for name, tensor in tensors:
            (want, shape, dtype, nbytes), i = next(expected, ((None, None, None, 0), -1))
            if name != want or tuple(tensor.shape) != shape or tensor.dtype != dtype:
                raise CheckpointError(f"{out_dir}: internal error: got {name} {tuple(tensor.shape)} {tensor.dtype}, "
                                      f"planned {want} {shape} {dtype}")
            tensor = tensor.contiguous()
            data = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            while len(in_flight) > workers:
                in_flight.pop(0).result()
            fut = pool.submit(write, i, data, where[name][1], tensor)
            in_flight.append(fut)
            futures[i].append(fut)
            left[i] -= 1
            if left[i] == 0:
                futures[i].append(pool.submit(finish, i, list(futures[i])))
        if next(expected, None) is not None:
            raise CheckpointError(f"{out_dir}: internal error: fewer tensors than planned")
        for group_futures in futures:
            for f in group_futures:
                f.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        for fd in fds:
            os.close(fd)
        for path in parts:
            path.unlink(missing_ok=True)
        raise
    pool.shutdown(wait=True)
    for fd in fds:
        os.close(fd)
    weight_map = {}
    for i, group in enumerate(groups):
        parts[i].rename(out_dir / finals[i])
        weight_map.update({name: finals[i] for name, *_ in group})
    if n_files > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return weight_map

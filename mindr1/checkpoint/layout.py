"""The Megatron-LM checkpoint layout (what ``--load`` reads and ``--save`` writes), as plain file I/O.

::

    DIR/latest_checkpointed_iteration.txt          "release" or an iteration number
    DIR/release/mp_rank_00/model_optim_rng.pt      PP=1: one folder per TP rank
    DIR/iter_0000100/mp_rank_01_003/model_optim_rng.pt   PP>1: TP rank 1, PP rank 3

Each ``model_optim_rng.pt`` is a ``torch.save`` dict with ``model`` (the rank's megatron-core
state dict, layer numbers local to the PP stage), ``iteration``, ``checkpoint_version`` and
``args``; optimizer and RNG state are optional. Writes are atomic (a temporary file renamed);
reads use ``torch.load(weights_only=True)`` with only the globals that Megatron-LM checkpoints
need allow-listed (see :func:`allowed_globals`), so a checkpoint cannot run code when loaded.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch

LATEST = "latest_checkpointed_iteration.txt"
SHARD_FILE = "model_optim_rng.pt"
RELEASE = "release"
CHECKPOINT_VERSION = 3.0


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or inconsistent; the message names the path."""


def iteration_dir_name(iteration: int | str) -> str:
    if iteration == RELEASE:
        return RELEASE
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise CheckpointError(f"iteration must be 'release' or a non-negative int, got {iteration!r}")
    return f"iter_{iteration:07d}"


_ITER_DIR = re.compile(r"^iter_(\d{7})$")
_RANK_DIR = re.compile(r"^mp_rank_\d{2}(_\d{3})?$")
_RANK_FILE = re.compile(r"^(model_optim_rng\.pt|optim_dp\d{3}\.pt)$")


def is_layout_entry(rel: Path, is_dir: bool) -> bool:
    """Whether ``rel`` (relative to a checkpoint root) is part of the layout mindr1 writes:
    ``{release|iter_N}/mp_rank_XX[_YYY]/{model_optim_rng.pt|optim_dpXXX.pt}`` and the latest file."""
    parts = rel.parts
    if len(parts) == 1:
        return (parts[0] == RELEASE or _ITER_DIR.match(parts[0]) is not None) if is_dir else parts[0] == LATEST
    if len(parts) == 2:
        return is_dir and _RANK_DIR.match(parts[1]) is not None
    return len(parts) == 3 and not is_dir and _RANK_FILE.match(parts[2]) is not None


def iterations(root: str | Path) -> list[int]:
    """The ``iter_%07d`` folders of ``root``, ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for m in (_ITER_DIR.match(p.name) for p in root.iterdir() if p.is_dir()) if m)


def shard_dir(root: str | Path, iteration: int | str, tp_rank: int, pp_rank: int, pp_size: int) -> Path:
    """``root/{release|iter_%07d}/mp_rank_%02d`` (PP=1) or ``.../mp_rank_%02d_%03d`` (PP>1)."""
    name = f"mp_rank_{tp_rank:02d}" if pp_size == 1 else f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"
    return Path(root) / iteration_dir_name(iteration) / name


def shard_path(root: str | Path, iteration: int | str, tp_rank: int, pp_rank: int, pp_size: int) -> Path:
    return shard_dir(root, iteration, tp_rank, pp_rank, pp_size) / SHARD_FILE


def read_latest(root: str | Path) -> int | str:
    """The iteration recorded in ``root/latest_checkpointed_iteration.txt`` (an int or 'release')."""
    path = Path(root) / LATEST
    if not path.exists():
        raise CheckpointError(f"{path}: not found; is {root} a Megatron checkpoint directory?")
    text = path.read_text().strip()
    if text == RELEASE:
        return RELEASE
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"{path}: expected 'release' or an iteration number, found {text[:40]!r}") from None


def write_error(path: Path, exc: BaseException) -> "CheckpointError":
    """A :class:`CheckpointError` naming ``path`` and the cause of a failed write.

    torch's zip writer reports a full disk as ``unexpected pos N vs M``; the file system is asked
    (read-only flag, write permission, free space) so the message says what actually happened.
    """
    import errno

    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    cause = None
    if isinstance(exc, OSError) and exc.errno is not None:
        cause = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                 errno.EPERM: "operation not permitted"}.get(exc.errno, exc.strerror)
    if cause is None:
        try:
            st = os.statvfs(folder)
            if st.f_flag & os.ST_RDONLY:
                cause = "read-only file system"
            elif not os.access(folder, os.W_OK):
                cause = "permission denied"
            elif st.f_bavail * st.f_frsize < 1 << 20:
                cause = f"no space left on device ({st.f_bavail * st.f_frsize} bytes free)"
        except OSError:
            pass
    cause = cause or f"{type(exc).__name__}: {_last_line(exc)}"
    return CheckpointError(f"{path}: cannot write: {cause}")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(folder: str | Path) -> None:
    """Make renames and new entries in ``folder`` durable (a crash after this keeps them)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_latest(root: str | Path, iteration: int | str) -> None:
    """Atomically and durably record ``iteration`` (validated) as the latest checkpoint of ``root``."""
    iteration_dir_name(iteration)
    _atomic_write_bytes(Path(root) / LATEST, f"{iteration}\n".encode())


def save_shard(path: str | Path, state: dict, fsync: bool = True) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename (readers never see half a file).

    With ``fsync`` the file and its folder are flushed to disk before this returns. Any failure
    (a full disk, no permission) removes the temporary file and raises :class:`CheckpointError`
    naming the path and the cause.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:
        raise write_error(path, exc) from None  # diagnosed while the partial file still fills the disk
    finally:
        tmp.unlink(missing_ok=True)


def allowed_globals(with_megatron: bool = False) -> list:
    """Non-tensor globals found in Megatron-LM checkpoints: ``args`` is an ``argparse.Namespace``
    (holding torch dtypes and, with ``with_megatron``, a few megatron-core enums), the RNG state
    holds numpy arrays, transformer-engine's ``_extra_state`` may be a BytesIO."""
    import numpy as np
    allowed: list = [argparse.Namespace, io.BytesIO, np.ndarray, np.dtype]
    core = getattr(np, "_core", None) or np.core
    allowed.append(core.multiarray._reconstruct)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 pickles dtypes by their class
        allowed += [getattr(dtypes, n) for n in ("UInt32DType", "Int64DType", "Float64DType", "Float32DType")
                    if hasattr(dtypes, n)]
    if with_megatron:
        from megatron.core.enums import ModelType
        from megatron.core.transformer.enums import AttnBackend
        allowed += [ModelType, AttnBackend]
    return allowed


def _torch_load(path: Path, mmap: bool, with_megatron: bool):
    # mmap needs the zip format; a legacy (torch < 1.6) pickle file such as an old
    # pytorch_model.bin is read whole instead.
    mmap = mmap and zipfile.is_zipfile(path)
    with torch.serialization.safe_globals(allowed_globals(with_megatron)):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


# torch names the refused global in several wordings ("Unsupported global: GLOBAL x.y" up to 2.5,
# "Trying to load unsupported GLOBAL x.y whose module x is blocked" since); match them all.
_REFUSED_GLOBAL = re.compile(r"(?i)unsupported\s+global:?\s+(?:global\s+)?([\w.]+)")
_CORRUPT = re.compile(r"(?i)unsupported operand|invalid load key|truncated|ran out of input|unexpected end")


def _refusal(exc: BaseException) -> str | None:
    """Why ``weights_only`` refused a well-formed pickle (None when the bytes are simply corrupt)."""
    text = str(exc)
    match = _REFUSED_GLOBAL.search(text)
    if match:
        return f"it needs the global {match.group(1)}, which Megatron checkpoints do not use"
    if "weights only load failed" in text.lower() and not _CORRUPT.search(text):
        return f"it holds something other than tensors and plain containers ({_last_line(exc)})"
    return None


def load_shard(path: str | Path, mmap: bool = False) -> dict:
    """Load one ``model_optim_rng.pt`` (or any torch file) safely on CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    try:
        try:
            state = _torch_load(path, mmap, with_megatron=False)
        except pickle.UnpicklingError as exc:
            # megatron-core (a slow import) is loaded only for checkpoints that hold its enums.
            match = _REFUSED_GLOBAL.search(str(exc))
            if match is None or not match.group(1).startswith("megatron.core."):
                raise
            state = _torch_load(path, mmap, with_megatron=True)
    except pickle.UnpicklingError as exc:
        reason = _refusal(exc)
        if reason is None:  # torch reports junk bytes as an unpickling failure too
            raise CheckpointError(f"{path}: corrupt or truncated checkpoint file (not a torch pickle: "
                                  f"{_last_line(exc)})") from None
        raise CheckpointError(f"{path}: refused to unpickle: {reason} (loading it could run code). Re-save "
                              "the file with plain tensors and dicts") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, TypeError,
            AttributeError, struct.error) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint file ({type(exc).__name__}: "
                              f"{_last_line(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(state).__name__}")
    return state


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Check the doc")]
    return lines[-1][:200] if lines else type(exc).__name__


def checkpoint_args(state: dict) -> dict:
    """``state['args']`` as a plain dict (mindr1 writes a dict, Megatron-LM a Namespace)."""
    args = state.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return dict(args or {})


def load_model_shard(root: str | Path, tp_rank: int, tp_size: int, pp_rank: int, pp_size: int,
                     iteration: int | str | None = None) -> dict:
    """The ``model`` state dict of one (tp, pp) rank, reading only that rank's file.

    Checks the topology recorded in ``args`` against the caller's, naming both.
    """
    iteration = read_latest(root) if iteration is None else iteration
    path = shard_path(root, iteration, tp_rank, pp_rank, pp_size)
    state = load_shard(path)
    args = checkpoint_args(state)
    saved = (args.get("tensor_model_parallel_size"), args.get("pipeline_model_parallel_size"))
    if None not in saved and saved != (tp_size, pp_size):
        raise CheckpointError(f"{path}: written for TP={saved[0]}, PP={saved[1]} but loading with TP={tp_size}, "
                              f"PP={pp_size}; re-shard it with tools/convert_ckpt.py --load-model-type mg "
                              "--save-model-type mg")
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: no 'model' state dict")
    return state["model"]

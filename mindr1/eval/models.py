"""Models to evaluate: HF directories as they are, Megatron checkpoints exported to HF on the fly.

``--model PATH`` or ``--model NAME=PATH``. PATH is one of

- an HF directory (``config.json`` + weights; tokenizer files there or ``--tokenizer``);
- a Megatron checkpoint root (``latest_checkpointed_iteration.txt``), any TP/PP;
- one of its ``iter_*`` / ``release`` directories.

A Megatron checkpoint is checked (layout, ``args``) before anything is generated and exported
through the streaming converter (``mindr1.checkpoint.convert``) into a temporary HF directory
when its turn comes; the export is deleted afterwards unless ``--keep-export``.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

_ITER_DIR = re.compile(r"^(iter_(\d{7})|release)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ModelError(ValueError):
    """A model path that cannot be evaluated; the message names the path and what is missing."""


@dataclass
class EvalModel:
    name: str
    path: Path
    kind: str  # "hf" | "megatron"
    tokenizer: Optional[Path] = None
    iteration: Optional[str] = None
    hf_dir: Optional[Path] = None
    _tmp: Optional[Path] = field(default=None, repr=False)

    def describe(self) -> dict:
        return {"path": str(self.path.resolve()), "kind": self.kind, "iteration": self.iteration,
                "fingerprint": fingerprint(self)}


def parse_model_flag(text: str) -> tuple[str, Path]:
    name, eq, path = text.partition("=")
    if eq and name and "/" not in name:
        return name, Path(path)
    path = Path(text)
    return (path.name or str(path)), path


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in TOKENIZER_FILES)


def resolve(name: str, path: Path, tokenizer: Optional[Path]) -> EvalModel:
    """Check ``path`` without loading weights; raises ModelError naming what is wrong."""
    if not path.exists():
        raise ModelError(f"--model {name}: {path} does not exist")
    if not path.is_dir():
        raise ModelError(f"--model {name}: {path} is not a directory")
    match = _ITER_DIR.match(path.name)
    if (path / "latest_checkpointed_iteration.txt").is_file() or match:
        root, iteration = (path.parent, ("release" if match.group(1) == "release" else str(int(match.group(2))))) \
            if match else (path, None)
        _check_megatron(name, root, iteration)
        tok = tokenizer
        if tok is None:
            from mindr1.checkpoint import mcore_io

            hf_dir = mcore_io.MegatronCheckpoint(root, iteration=_iteration_value(iteration)).args.get("hf_dir")
            tok = Path(hf_dir) if hf_dir and _has_tokenizer(Path(hf_dir)) else None
        if tok is None:
            raise ModelError(f"--model {name}: the Megatron checkpoint {path} records no HF directory with a "
                             "tokenizer; pass --tokenizer DIR")
        return EvalModel(name, path, "megatron", tokenizer=tok, iteration=iteration or None)
    if not (path / "config.json").is_file():
        raise ModelError(f"--model {name}: {path} has no config.json (an HF model directory) and no "
                         "latest_checkpointed_iteration.txt (a Megatron checkpoint)")
    tok = tokenizer or path
    if not _has_tokenizer(Path(tok)):
        raise ModelError(f"--model {name}: no tokenizer in {tok} (looked for {', '.join(TOKENIZER_FILES)}); "
                         "pass --tokenizer DIR")
    return EvalModel(name, path, "hf", tokenizer=Path(tok), hf_dir=path)


def _iteration_value(iteration: Optional[str]):
    if iteration is None or iteration == "release":
        return iteration
    return int(iteration)


def _check_megatron(name: str, root: Path, iteration: Optional[str]) -> None:
    from mindr1.checkpoint import mcore_io
    from mindr1.checkpoint.layout import CheckpointError

    try:
        ckpt = mcore_io.MegatronCheckpoint(root, iteration=_iteration_value(iteration))
    except CheckpointError as exc:
        if "mindr1_arch" in str(exc):  # a Megatron-LM checkpoint: its architecture comes from an HF config
            raise ModelError(f"--model {name}: {root}: the shards' args carry no 'mindr1_arch' (the architecture); "
                             "write a mindr1 checkpoint first: tools/convert_ckpt.py --load-model-type mg "
                             "--save-model-type mg --hf-config-dir HF_DIR --load-dir ... --save-dir ...") from None
        raise ModelError(f"--model {name}: {exc}") from None
    if not ckpt.args:
        raise ModelError(f"--model {name}: {root} shards carry no 'args'; cannot tell the architecture")


def export(model: EvalModel, keep_export: bool, workdir: Path) -> Path:
    """The HF directory of ``model``: itself, or a fresh export of the Megatron checkpoint."""
    if model.kind == "hf":
        return model.path
    from mindr1.checkpoint.convert import main as convert_main

    root = model.path.parent if _ITER_DIR.match(model.path.name) else model.path
    if keep_export:
        out = workdir / f"export-{model.name}"
    else:
        model._tmp = Path(tempfile.mkdtemp(prefix=f"mindr1-eval-{model.name}-"))
        out = model._tmp / "hf"
    args = ["--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(root), "--save-dir", str(out),
            "--no-fsync", "--force"]
    if model.iteration is not None:
        args += ["--load-iteration", model.iteration]
    if model.tokenizer is not None:
        args += ["--tokenizer-model", str(model.tokenizer)]
    code = convert_main(args)
    if code:
        raise ModelError(f"--model {model.name}: exporting {model.path} to HF failed (exit code {code})")
    model.hf_dir = out
    return out


def cleanup(model: EvalModel) -> None:
    if model._tmp is not None:
        shutil.rmtree(model._tmp, ignore_errors=True)
        model._tmp = None


def fingerprint(model: EvalModel) -> str:
    """Of the files evaluated: the HF directory's config and weights, or the Megatron shards."""
    if model.kind == "hf":
        return weights_fingerprint([model.path / "config.json"] + sorted(model.path.glob("*.safetensors"))
                                   + sorted(model.path.glob("*.bin")))
    from mindr1.checkpoint import layout

    root = model.path.parent if _ITER_DIR.match(model.path.name) else model.path
    iteration = _iteration_value(model.iteration) if model.iteration else layout.read_latest(root)
    return weights_fingerprint(sorted((root / layout.iteration_dir_name(iteration)).glob("mp_rank_*/*.pt")))


def weights_fingerprint(files: list[Path], chunks: int = 16, chunk_bytes: int = 1 << 16) -> str:
    """sha256 over each file's name, size and ``chunks`` evenly spaced slices of it.

    Not a full hash (a 7B model is 15 GB): it tells different checkpoints apart in practice and
    costs milliseconds.
    """
    digest = hashlib.sha256()
    for weights in files:
        if not weights.is_file():
            continue
        size = weights.stat().st_size
        digest.update(f"{weights.parent.name}/{weights.name}:{size}".encode())
        with open(weights, "rb") as fh:
            for i in range(chunks):
                fh.seek(max(0, size - chunk_bytes) * i // max(1, chunks - 1))
                digest.update(fh.read(chunk_bytes))
    return digest.hexdigest()

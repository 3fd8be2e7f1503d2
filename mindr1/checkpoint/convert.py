"""``mindr1 convert`` / ``tools/convert_ckpt.py``: HF <-> TP/PP-sharded Megatron checkpoints, and re-sharding.

MindSpeed-LLM's flag names are kept (``--load-model-type hf --save-model-type mg
--target-tensor-parallel-size 2 ...``) so their scripts run unchanged. Every input is read lazily
and checked (files, config vs tensor shapes, TP/PP divisibility) before anything is written; the
output is built in a temporary directory next to ``--save-dir`` and renamed when complete.
Peak memory is one output shard plus one layer (see :mod:`mindr1.checkpoint.mcore_io`).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mindr1.checkpoint import hf_io, layout, mcore_io
from mindr1.checkpoint.layout import CheckpointError
from mindr1.checkpoint.staging import check_output_dir, staged_output
from mindr1.config import ConfigError, Range
from mindr1.models import adapter as A
from mindr1.models.arch import ModelArch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FAMILY_ALIASES = {"qwen2": "qwen2", "qwen2.5": "qwen2", "qwen25": "qwen2", "llama": "llama", "llama2": "llama",
                  "llama3": "llama", "smollm2": "llama"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja")


def size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    upper = text.strip().upper()
    for unit in sorted(units, key=len, reverse=True):
        if upper.endswith(unit):
            return int(float(upper[: -len(unit)]) * units[unit])
    return int(upper)


_AT_LEAST_1 = Range(ge=1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convert_ckpt", description=__doc__.split("\n")[0])
    p.add_argument("--load-model-type", choices=["hf", "mg"], required=True)
    p.add_argument("--save-model-type", choices=["hf", "mg"], required=True)
    p.add_argument("--load-dir", required=True, help="HF directory or Megatron checkpoint root")
    p.add_argument("--save-dir", required=True)
    p.add_argument("--load-iteration", default=None,
                   help="Megatron input: 'release' or an iteration number (default: latest_checkpointed_iteration.txt)")
    p.add_argument("--target-tensor-parallel-size", type=_AT_LEAST_1.argtype(int), default=1)
    p.add_argument("--target-pipeline-parallel-size", type=_AT_LEAST_1.argtype(int), default=1)
    p.add_argument("--num-layer-list", default=None, help="layers per pipeline stage, e.g. 7,7,7,7")
    p.add_argument("--model-type-hf", default=None, help="qwen2 or llama (detected from config.json if unset)")
    p.add_argument("--params-dtype", choices=sorted(DTYPES), default=None, help="default: keep the source dtype")
    p.add_argument("--add-qkv-bias", action="store_true")
    vocab = p.add_mutually_exclusive_group()
    vocab.add_argument("--make-vocab-size-divisible-by", type=_AT_LEAST_1.argtype(int), default=None)
    vocab.add_argument("--padded-vocab-size", type=_AT_LEAST_1.argtype(int), default=None)
    p.add_argument("--tokenizer-model", default=None, help="tokenizer dir or file copied into an HF export")
    p.add_argument("--hf-config-dir", default=None, help="HF config.json for Megatron checkpoints not written by mindr1")
    p.add_argument("--max-shard-size", type=_AT_LEAST_1.argtype(size), default="2GB", help="largest safetensors file of an HF export")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --save-dir that holds a previous conversion output (nothing else)")
    p.add_argument("--no-fsync", dest="fsync", action="store_false", help="skip fsync of each written file")
    # Accepted for MindSpeed-LLM compatibility; mindr1 always writes mcore GPT models.
    p.add_argument("--use-mcore-models", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-type", default="GPT", help=argparse.SUPPRESS)
    return p


@dataclass
class Source:
    reader: object  # callable name -> Tensor with .names / .shapes() / .get_rows()
    arch: ModelArch
    hf_config: dict | None
    extra_args: dict  # carried into the args of a Megatron output


def _family(opts) -> str | None:
    if opts.model_type_hf is None:
        return None
    family = FAMILY_ALIASES.get(opts.model_type_hf.lower())
    if family is None:
        raise ConfigError(f"--model-type-hf: unknown model family {opts.model_type_hf!r}; supported: "
                          f"{sorted(FAMILY_ALIASES)}")
    return family


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def open_source(opts) -> Source:
    """Open and fully validate the input; raises before anything is written."""
    load_dir = Path(opts.load_dir)
    if not load_dir.is_dir():
        raise CheckpointError(f"--load-dir {load_dir}: not a directory")
    family = _family(opts)
    if opts.load_model_type == "hf":
        arch = ModelArch.from_hf_config(load_dir, family=family)
        if opts.add_qkv_bias:
            arch = arch.replace(add_qkv_bias=True)
        reader = hf_io.HFCheckpoint(load_dir)
        A.check_hf_shapes(arch, reader.shapes(), source=str(load_dir))
        extra = {"hf_dir": str(load_dir.resolve()),
                 "hf_generation_config": _read_json(load_dir / "generation_config.json")}
        return Source(reader, arch, _read_json(load_dir / "config.json"), extra)
    arch = ModelArch.from_hf_config(opts.hf_config_dir, family=family) if opts.hf_config_dir else None
    iteration = getattr(opts, "load_iteration", None)
    if iteration is not None and iteration != "release":
        try:
            iteration = int(iteration)
        except ValueError:
            raise ConfigError(f"--load-iteration: expected 'release' or an iteration number, got {iteration!r}") from None
    reader = mcore_io.MegatronCheckpoint(load_dir, arch=arch, iteration=iteration)
    args = reader.args
    extra = {k: args.get(k) for k in ("hf_dir", "hf_generation_config")}
    hf_config = args.get("hf_config") or (_read_json(Path(opts.hf_config_dir) / "config.json")
                                          if opts.hf_config_dir else None)
    return Source(reader, reader.arch, hf_config, extra)


def target_arch(opts, arch: ModelArch) -> ModelArch:
    if opts.make_vocab_size_divisible_by is not None:
        arch = arch.replace(make_vocab_size_divisible_by=opts.make_vocab_size_divisible_by, padded_vocab_size=None)
    if opts.padded_vocab_size is not None:
        arch = arch.replace(padded_vocab_size=opts.padded_vocab_size)
    if opts.params_dtype is not None:
        arch = arch.replace(torch_dtype=str(DTYPES[opts.params_dtype]).removeprefix("torch."))
    return arch


def _layer_list(opts) -> list[int] | None:
    if not opts.num_layer_list:
        return None
    try:
        return [int(x) for x in opts.num_layer_list.split(",")]
    except ValueError:
        raise ConfigError(f"--num-layer-list {opts.num_layer_list!r}: expected comma-separated ints") from None


_HF_FILES = re.compile(r"^(model\.safetensors|model-\d{5}-of-\d{5}\.safetensors|model\.safetensors\.index\.json|"
                       r"config\.json|generation_config\.json)$")


def written_by_convert(rel: Path, is_dir: bool) -> bool:
    """Whether ``rel`` (relative to --save-dir) is something a conversion writes; --force replaces only those."""
    if layout.is_layout_entry(rel, is_dir):
        return True
    return len(rel.parts) == 1 and not is_dir and (rel.name in TOKENIZER_FILES or _HF_FILES.match(rel.name) is not None)


def write_mg(opts, src: Source, arch: ModelArch, out: Path) -> None:
    tp, pp, layers = opts.target_tensor_parallel_size, opts.target_pipeline_parallel_size, _layer_list(opts)
    dtype = DTYPES[opts.params_dtype] if opts.params_dtype else None
    params_dtype = str(dtype or src.reader(A.HF_NORM).dtype).removeprefix("torch.")
    args = mcore_io.megatron_args(arch, tp, pp, layers, params_dtype, src.hf_config, src.extra_args)
    for path in mcore_io.write_megatron(out, arch, src.reader, tp, pp, layers, dtype, args, fsync=opts.fsync):
        print(f"wrote {path.relative_to(out)} ({path.stat().st_size / 1e9:.2f} GB)", flush=True)


def hf_config_for(arch: ModelArch, source_config: dict | None) -> dict:
    """The source config.json with every field the architecture determines rewritten."""
    cfg = dict(source_config or {})
    cfg.update(arch.to_hf_config())
    if "dtype" in cfg:  # transformers >= 4.56 writes "dtype"; keep both names in agreement
        cfg["dtype"] = cfg["torch_dtype"]
    return cfg


def _copy_tokenizer(opts, src: Source, out: Path) -> None:
    candidates = [Path(opts.tokenizer_model)] if opts.tokenizer_model else []
    if src.extra_args.get("hf_dir"):
        candidates.append(Path(src.extra_args["hf_dir"]))
    for cand in candidates:
        folder = cand if cand.is_dir() else cand.parent
        found = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
        if found:
            for f in found:
                shutil.copy2(folder / f, out / f)
            if not (out / "generation_config.json").exists() and (folder / "generation_config.json").is_file():
                shutil.copy2(folder / "generation_config.json", out / "generation_config.json")
            return
    print("warning: no tokenizer files found (pass --tokenizer-model DIR); the export has weights and config only",
          file=sys.stderr)


def write_hf(opts, src: Source, arch: ModelArch, out: Path) -> None:
    dtype = DTYPES[opts.params_dtype] if opts.params_dtype else None
    tensors = ((n, src.reader(n) if dtype is None else src.reader(n).to(dtype)) for n in src.reader.names)
    dtypes = src.reader.dtypes()
    plan = None
    if dtypes is not None:
        shapes = src.reader.shapes()
        plan = [(n, shapes[n], dtype or dtypes[n]) for n in src.reader.names]
    if plan is not None and hf_io.can_stream(plan):  # same bytes as below, without buffering a file
        weight_map = hf_io.write_hf_streaming(out, plan, tensors, opts.max_shard_size, fsync=opts.fsync)
    else:
        weight_map = hf_io.write_hf_safetensors(out, tensors, opts.max_shard_size, fsync=opts.fsync)
    print(f"wrote {len(weight_map)} tensors in {len(set(weight_map.values()))} safetensors file(s)", flush=True)
    (out / "config.json").write_text(json.dumps(hf_config_for(arch, src.hf_config), indent=2) + "\n")
    gen = src.extra_args.get("hf_generation_config")
    if gen:
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    _copy_tokenizer(opts, src, out)
    if not (out / "generation_config.json").exists():
        gen = {k: v for k, v in (("bos_token_id", arch.bos_token_id), ("eos_token_id", arch.eos_token_id)) if v is not None}
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def convert(opts) -> Path:
    """Validate everything, then write the output atomically; returns the output directory."""
    check_output_dir(Path(opts.save_dir), Path(opts.load_dir), opts.force, written_by_convert)
    src = open_source(opts)
    arch = target_arch(opts, src.arch)
    if opts.save_model_type == "mg":
        A.check_tp(arch, opts.target_tensor_parallel_size)
        A.pp_layer_ranges(arch.num_layers, opts.target_pipeline_parallel_size, _layer_list(opts))
    else:
        arch.to_hf_config()  # raises for architectures HF cannot express
    save_dir = Path(opts.save_dir)
    with staged_output(save_dir, opts.force, Path(opts.load_dir), written_by_convert) as out:
        (write_mg if opts.save_model_type == "mg" else write_hf)(opts, src, arch, out)
    return save_dir


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        out = convert(opts)
    except (ConfigError, CheckpointError) as exc:
        print(f"convert_ckpt: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an I/O failure outside the checkpoint writers: still the path and the cause
        print(f"convert_ckpt: error: {exc.filename or opts.save_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"converted {opts.load_model_type} {opts.load_dir} -> {opts.save_model_type} {out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

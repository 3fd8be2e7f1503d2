"""Random HF checkpoints of a given architecture, written tensor by tensor (tests and benchmarks).

A Qwen2.5-7B-shaped checkpoint is ~15 GB in bf16; it is generated and written in bounded memory
(one safetensors file at a time), so the conversion benchmark can run on small machines.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from mindr1.checkpoint.hf_io import write_hf_safetensors
from mindr1.models.adapter import hf_expected_shapes
from mindr1.models.arch import ModelArch

_ROWS = 4096


def write_random_hf_checkpoint(out_dir: str | Path, arch: ModelArch, dtype: torch.dtype = torch.float32,
                               seed: int = 0, max_shard_bytes: int = 2 * 10**9) -> Path:
    """``config.json``, ``generation_config.json`` and safetensors of random weights for ``arch``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)

    def tensors():
        for name, shape in hf_expected_shapes(arch).items():
            out = torch.empty(shape, dtype=dtype)
            for start in range(0, shape[0], _ROWS):  # in row blocks: no fp32 copy of a 1 GB embedding
                block = out[start:start + _ROWS]
                # Scaled so a forward pass stays finite (tests may run the model).
                block.copy_(torch.randn(block.shape, generator=gen) * 0.02)
            yield name, out

    write_hf_safetensors(out, tensors(), max_shard_bytes)
    arch = arch.replace(torch_dtype=str(dtype).removeprefix("torch."))
    (out / "config.json").write_text(json.dumps(arch.to_hf_config(), indent=2) + "\n")
    gen_cfg = {k: v for k, v in (("bos_token_id", arch.bos_token_id), ("eos_token_id", arch.eos_token_id))
               if v is not None}
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
    return out

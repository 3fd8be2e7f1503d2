"""Helpers shared by the multi-process tests: random HF checkpoints and gathering HF-named tensors."""
from __future__ import annotations

from pathlib import Path

import torch


def random_hf_checkpoint(arch, out_dir: Path, seed: int = 0) -> Path:
    """Save a randomly initialised HF model of ``arch`` (norm weights perturbed too) to ``out_dir``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = arch.to_hf_config()
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(out_dir)
    return out_dir


def gather_hf_named(arch, local: dict[str, torch.Tensor], topology) -> dict[str, torch.Tensor] | None:
    """Gather every rank's mcore-named tensors to global rank 0 and return them HF-named (else None)."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from mindr1.models.adapter import hf_tensors_from_mcore

    mine = {"tp": ps.get_tensor_model_parallel_rank(), "pp": ps.get_pipeline_model_parallel_rank(),
            "dp": ps.get_data_parallel_rank(), "tensors": {k: v.detach().cpu() for k, v in local.items()}}
    everyone = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, everyone, dst=0)
    if dist.get_rank() != 0:
        return None
    out = {}
    for pp in range(topology.pp):
        shards = sorted((e for e in everyone if e["pp"] == pp and e["dp"] == 0), key=lambda e: e["tp"])
        out.update(hf_tensors_from_mcore(arch, [e["tensors"] for e in shards], pp, topology.pp))
    return out


def main_grads(ddp_model) -> dict[str, torch.Tensor]:
    """Gradients by mcore name (megatron DDP keeps them in ``param.main_grad``)."""
    module = ddp_model.module
    return {name: p.main_grad.detach().clone() for name, p in module.named_parameters()}

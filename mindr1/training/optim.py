"""Model wrapping and optimizer: megatron DDP, the (distributed) Adam optimizer, LR/WD schedule.

Gradients are summed, not averaged, across data-parallel ranks: every loss is already divided by
the *global* number of valid tokens (see ``schedule.token_loss_sum``), so the sum over DP ranks
is the gradient of the global token-mean loss, whatever the DP size or micro-batching.
``finalize_model_grads`` also all-reduces the tied embedding/output gradients between the first
and last pipeline stages and the layer-norm gradients of TP-duplicated parameters when needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class OptimSettings:
    lr: float = 1e-5
    min_lr: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    use_distributed_optimizer: bool = True
    lr_warmup_iters: int = 0
    lr_decay_iters: int = 1
    lr_decay_style: str = "cosine"


def wrap_ddp(model, config, use_distributed_optimizer: bool = True):
    """Wrap a GPTModel stage in megatron's DDP (contiguous grad buffers, DP grad reduction)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=use_distributed_optimizer,
        average_in_collective=False,
    )
    # config.calculate_per_token_loss is True (see models.megatron.transformer_config), so megatron
    # DDP reduces by SUM across DP (gradient_scaling_factor 1): right for a global-token-mean loss.
    assert config.calculate_per_token_loss, "losses must be normalised by the global valid-token count"
    return DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)


def attach_grad_finalizer(config, ddp_models: list) -> None:
    """Have the pipeline schedule reduce gradients (DP, tied embeddings) after the last backward."""
    from megatron.core.distributed import finalize_model_grads

    def finalize(model_chunks, num_tokens=None, **kwargs):
        # num_tokens is not passed on: losses are already divided by the global valid-token count.
        return finalize_model_grads(model_chunks, num_tokens=None)

    config.finalize_model_grads_func = finalize
    config.no_sync_func = ddp_models[0].no_sync if len(ddp_models) == 1 else [m.no_sync for m in ddp_models]
    config.grad_sync_func = None
    config.param_sync_func = None


def build_optimizer(ddp_models: list, settings: OptimSettings, dtype: torch.dtype):
    """megatron Adam(W) (distributed optimizer when asked) over the DDP-wrapped stage(s)."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config = OptimizerConfig(
        optimizer="adam",
        lr=settings.lr,
        min_lr=settings.min_lr,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        adam_eps=settings.adam_eps,
        clip_grad=settings.clip_grad,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        params_dtype=dtype,
        use_distributed_optimizer=settings.use_distributed_optimizer,
    )
    return get_megatron_optimizer(config, ddp_models)


def build_scheduler(optimizer, settings: OptimSettings):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if settings.lr_warmup_iters > 0 else settings.lr,
        max_lr=settings.lr,
        min_lr=settings.min_lr,
        lr_warmup_steps=settings.lr_warmup_iters,
        lr_decay_steps=max(settings.lr_decay_iters, settings.lr_warmup_iters + 1),
        lr_decay_style=settings.lr_decay_style,
        start_wd=settings.weight_decay,
        end_wd=settings.weight_decay,
        wd_incr_steps=max(settings.lr_decay_iters, 1),
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True,
        override_opt_param_scheduler=False,
    )


def optimizer_step(optimizer, scheduler: Optional[object] = None, increment: int = 1) -> dict:
    """One optimizer step (grad clipping inside); advances the LR schedule. Returns metrics."""
    lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
    ok, grad_norm, _zeros = optimizer.step()
    if scheduler is not None and ok:
        scheduler.step(increment=increment)
    return {"update_ok": bool(ok), "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "lr": float(lr)}


def zero_grads(ddp_models: list, optimizer) -> None:
    for model in ddp_models:
        model.zero_grad_buffer()
    optimizer.zero_grad()

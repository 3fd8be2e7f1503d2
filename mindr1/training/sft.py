"""Supervised fine-tuning on Megatron TP/PP: stage 1 (cold start) and stage 3 of the recipe.

``mindr1 sft --config configs/sft/X.yaml key=value ...`` (or MindSpeed-style ``--flag value``).
Outside torchrun it re-launches itself as TP*PP local ranks (or ``--nproc-per-node``) with
:func:`mindr1.parallel.launch.run_ranks`, rendezvous on 127.0.0.1; under torchrun each process is one rank.

The loop is ``train()`` -> ``train_step()`` -> megatron's pipeline schedule; the loss is the
token-mean over the *global* batch's valid (response) tokens, so results do not depend on the
micro-batch size, accumulation or DP size.
"""
from __future__ import annotations

import math
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from mindr1.accelerator import get_accelerator
from mindr1.config import ConfigError, load_config, to_dict
from mindr1.training import checkpointing
from mindr1.training.config import SFTConfig, flags_to_overrides
from mindr1.training.data import build_sft_dataset, iteration_batch
from mindr1.training.schedule import run_pipeline, token_loss_sum, token_nll_loss_sum


def resolve_arch(cfg: SFTConfig):
    """The model: ``cfg.model`` when given, else the one recorded in the ``load`` checkpoint."""
    from mindr1.checkpoint import layout
    from mindr1.checkpoint.mcore_io import arch_from_args
    from mindr1.models.arch import load_arch

    if cfg.model:
        return load_arch(cfg.model), {}
    source = cfg.save if checkpointing.latest_iteration(cfg.save) is not None else cfg.load
    if not source:
        raise ConfigError("model: set `model` (a configs/model name, YAML or HF dir) or `load` a checkpoint")
    iteration = layout.read_latest(source)
    pp = _checkpoint_pp(Path(source) / layout.iteration_dir_name(iteration))
    args = layout.checkpoint_args(layout.load_shard(layout.shard_path(source, iteration, 0, 0, pp), mmap=True))
    arch = arch_from_args(args)
    if arch is None:
        raise ConfigError(f"{source}: the checkpoint does not record its model; set `model`")
    want = (args.get("tensor_model_parallel_size"), args.get("pipeline_model_parallel_size"))
    have = (cfg.tensor_model_parallel_size, cfg.pipeline_model_parallel_size)
    if None not in want and tuple(want) != have:
        raise ConfigError(f"{source} is split TP={want[0]} PP={want[1]} but this run has TP={have[0]} PP={have[1]}; "
                          "re-shard it with tools/convert_ckpt.py --load-model-type mg --save-model-type mg")
    return arch, args


def _checkpoint_pp(iter_dir: Path) -> int:
    return 1 if (iter_dir / "mp_rank_00").exists() else 1 + max(
        int(d.name.split("_")[-1]) for d in iter_dir.glob("mp_rank_00_*"))


class SFTTrainer:
    def __init__(self, cfg: SFTConfig):
        from mindr1.parallel.state import ParallelContext
        from mindr1.parallel.topology import Topology

        self.cfg = cfg
        self.acc = get_accelerator()
        world = dist.get_world_size()
        self.dp = cfg.check_world(world)
        self.topology = Topology(world, cfg.tensor_model_parallel_size, cfg.pipeline_model_parallel_size)
        self.ctx = ParallelContext(self.topology, seed=cfg.seed, timeout_s=cfg.distributed_timeout_s).build()
        self.arch, self.source_args = resolve_arch(cfg)
        bf16 = (not self.acc.is_cpu) if cfg.bf16 is None else cfg.bf16
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self._build_model()
        # GPTModel's own cross entropy equals ours (which masks padded vocabulary rows, in fp32) when no
        # row is padding and the logits are fp32; it then skips a copy of the logits (see schedule).
        self._model_loss = (self.arch.padded_vocab(self.topology.tp) == self.arch.vocab_size
                            and self.dtype == torch.float32
                            and not getattr(self.model.module.config, "cross_entropy_loss_fusion", False))
        self.iteration = self._restore()
        self.dataset = build_sft_dataset(cfg.data_path, cfg.dataset_category, cfg.train_iters * cfg.global_batch_size,
                                         cfg.seed)
        self.is_logger = self.ctx.is_last_stage and self.ctx.tp_rank == 0 and self.ctx.dp_rank == 0
        self.logger = self._make_logger() if self.is_logger else None

    # ------------------------------------------------------------------ setup

    def _build_model(self) -> None:
        from mindr1.models.megatron import build_model
        from mindr1.training.optim import (OptimSettings, attach_grad_finalizer, build_optimizer, build_scheduler,
                                           wrap_ddp)

        cfg = self.cfg
        model = build_model(self.arch, self.topology, self.dtype, cfg.layer_list)
        self.model = wrap_ddp(model, model.config, cfg.use_distributed_optimizer)
        attach_grad_finalizer(model.config, [self.model])
        settings = OptimSettings(lr=cfg.lr, min_lr=cfg.min_lr, weight_decay=cfg.weight_decay,
                                 adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_eps=cfg.adam_eps,
                                 clip_grad=cfg.clip_grad, use_distributed_optimizer=cfg.use_distributed_optimizer,
                                 lr_warmup_iters=cfg.warmup_iters, lr_decay_iters=cfg.lr_decay_iters or cfg.train_iters,
                                 lr_decay_style=cfg.lr_decay_style)
        self.optimizer = build_optimizer([self.model], settings, self.dtype)
        self.scheduler = build_scheduler(self.optimizer, settings)

    def _restore(self) -> int:
        """Resume from ``save`` when it holds a checkpoint, else start from ``load``. Returns the iteration."""
        cfg = self.cfg
        module = self.model.module
        if checkpointing.latest_iteration(cfg.save) is not None:
            state = checkpointing.load(cfg.save, self.ctx, module, self.optimizer, self.scheduler)
            self._after_load()
            return int(state["iteration"])
        if cfg.load:
            release = checkpointing.latest_iteration(cfg.load) == "release"
            fresh = cfg.finetune or release
            state = checkpointing.load(cfg.load, self.ctx, module, self.optimizer, self.scheduler,
                                       load_optim=not (fresh or cfg.no_load_optim),
                                       load_rng=not (fresh or cfg.no_load_rng))
            self._after_load()
            return 0 if fresh else int(state["iteration"])
        return 0

    def _after_load(self) -> None:
        # The optimizer keeps fp32 main params (and DDP a grad buffer) copied at construction time:
        # refresh them from the loaded weights when no optimizer state was loaded with them.
        for opt in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            if hasattr(opt, "reload_model_params"):
                opt.reload_model_params()

    def _make_logger(self):
        from mindr1.training.logger import MetricsLogger

        cfg = self.cfg
        tb = cfg.tensorboard_dir or (str(Path(cfg.save) / "tensorboard") if cfg.save else None)
        jsonl = str(Path(cfg.save) / "metrics.jsonl") if cfg.save else None
        return MetricsLogger(cfg.train_iters, jsonl_path=jsonl, tensorboard_dir=tb, wandb_project=cfg.wandb_project,
                             run_name="sft", start_step=self.iteration, config=to_dict(cfg))

    # ------------------------------------------------------------------ loop

    def train(self) -> list[dict]:
        cfg, history = self.cfg, []
        if cfg.eval_data_path and self.iteration == 0:
            self._log(0, {"eval_loss": self.evaluate()})
        stop = cfg.train_iters if cfg.exit_after_iters is None else min(cfg.train_iters,
                                                                          self.iteration + cfg.exit_after_iters)
        while self.iteration < stop:
            metrics = self.train_step(self.iteration)
            self.iteration += 1
            history.append(metrics)
            if self.iteration % cfg.log_interval == 0 or self.iteration == cfg.train_iters:
                self._log(self.iteration, metrics)
            if self.logger:
                self.logger.advance()
            if cfg.eval_data_path and cfg.eval_interval and self.iteration % cfg.eval_interval == 0:
                self._log(self.iteration, {"eval_loss": self.evaluate()})
            if cfg.save and ((cfg.save_interval and self.iteration % cfg.save_interval == 0)
                             or self.iteration == cfg.train_iters):
                self.save()
        if cfg.eval_data_path and self.iteration == cfg.train_iters and not (
                cfg.eval_interval and self.iteration % cfg.eval_interval == 0):
            self._log(self.iteration, {"eval_loss": self.evaluate()})
        if self.logger:
            self.logger.close()
        return history

    def train_step(self, iteration: int) -> dict:
        from mindr1.training.optim import optimizer_step, zero_grads

        cfg = self.cfg
        t0 = time.perf_counter()
        micro, global_tokens, real_tokens = iteration_batch(
            self.dataset, iteration, cfg.global_batch_size, cfg.micro_batch_size, self.ctx.dp_rank, self.dp,
            cfg.seq_length)
        micro = [self._to_device(mb) for mb in micro]
        zero_grads([self.model], self.optimizer)
        if self._model_loss:
            loss_fn = partial(token_nll_loss_sum, global_valid_tokens=max(global_tokens, 1.0))
        else:
            loss_fn = partial(token_loss_sum, global_valid_tokens=max(global_tokens, 1.0),
                              vocab_size=self.arch.vocab_size)
        outputs = run_pipeline([self.model], micro, loss_fn, labels_to_model=self._model_loss)
        stats = optimizer_step(self.optimizer, self.scheduler)
        loss = self._global_loss(outputs, global_tokens)
        self.acc.synchronize()
        dt = time.perf_counter() - t0
        metrics = {"loss": loss, "grad_norm": stats["grad_norm"], "lr": stats["lr"],
                   "tokens_per_s": real_tokens / dt, "samples_per_s": cfg.global_batch_size / dt,
                   "step_time_s": dt, "loss_tokens": global_tokens}
        metrics.update(self._flops(real_tokens, dt))
        return metrics

    def _global_loss(self, outputs: list, global_tokens: float) -> float:
        """Sum of the micro-batch loss sums over DP, over the global token count (last stage; NaN elsewhere)."""
        from megatron.core import parallel_state as ps

        if not self.ctx.is_last_stage:
            return float("nan")
        # Summed on the device in float64, in order (the same additions as Python's sum of floats):
        # one host transfer per step instead of one per micro-batch.
        total = torch.zeros((), dtype=torch.float64, device=outputs[0]["loss_sum"].device if outputs else None)
        for o in outputs:
            total = total + o["loss_sum"].to(torch.float64)
        dist.all_reduce(total, group=ps.get_data_parallel_group(with_context_parallel=True))
        return total.item() / max(global_tokens, 1.0)

    def _flops(self, tokens: int, dt: float) -> dict:
        if self.acc.is_cpu:
            return {}
        n = self.arch.num_params()
        flops = 6 * n * tokens + 12 * self.arch.num_layers * self.arch.hidden_size * self.cfg.seq_length * tokens
        tflops = flops / dt / 1e12 / dist.get_world_size()
        out = {"tflops_per_device": tflops}
        peak = self.cfg.peak_tflops or self.acc.peak_tflops(self.dtype)
        if peak:
            out["mfu"] = tflops / peak
        return out

    def _to_device(self, batch: dict) -> dict:
        if self.acc.is_cpu:
            return batch
        device = self.acc.device()
        return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def evaluate(self) -> float:
        """Token-mean loss of the first ``eval_samples`` held-out samples (forward only)."""
        from mindr1.data.datasets import InstructionDataset
        from mindr1.training.data import collate

        cfg = self.cfg
        data = InstructionDataset(cfg.eval_data_path)
        n = min(cfg.eval_samples, len(data))
        samples = [data[i] for i in range(n)]
        micro = [self._to_device(collate(samples[k:k + cfg.micro_batch_size], cfg.seq_length))
                 for k in range(0, n - n % cfg.micro_batch_size, cfg.micro_batch_size)]
        tokens = float(sum(mb["loss_mask"].sum() for mb in micro))
        self.model.eval()
        with torch.no_grad():
            outputs = run_pipeline([self.model], micro, partial(token_loss_sum, global_valid_tokens=max(tokens, 1.0),
                                                                 vocab_size=self.arch.vocab_size), forward_only=True)
        self.model.train()
        if not self.ctx.is_last_stage:
            return float("nan")
        return sum(float(o["loss_sum"]) for o in outputs) / max(tokens, 1.0)

    def save(self) -> None:
        from mindr1.checkpoint.mcore_io import megatron_args

        args = megatron_args(self.arch, self.topology.tp, self.topology.pp, self.cfg.layer_list,
                             "bf16" if self.dtype == torch.bfloat16 else "fp32",
                             self.source_args.get("hf_config"), extra={"mindr1_sft": to_dict(self.cfg)})
        checkpointing.save(self.cfg.save, self.iteration, self.ctx, self.model.module, self.optimizer,
                           self.scheduler, args, {"iteration": self.iteration,
                                                  "consumed_samples": self.iteration * self.cfg.global_batch_size},
                           timeout_s=self.cfg.distributed_timeout_s, keep_last_n=self.cfg.keep_last_n,
                           keep_every_n=self.cfg.keep_every_n)

    def _log(self, step: int, metrics: dict) -> None:
        if self.logger:
            self.logger.log(step, {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))})

    def close(self) -> None:
        self.ctx.destroy()


def _relaunch_ranks(argv: list[str], nproc: int) -> int:
    from mindr1.parallel.launch import run_ranks

    cmd = [sys.executable, "-m", "mindr1.training.sft", *argv]
    print(f"[mindr1] launching {nproc} ranks on 127.0.0.1: {' '.join(cmd)}", flush=True)
    return run_ranks(cmd, nproc)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    nproc = None
    if "--nproc-per-node" in argv:
        k = argv.index("--nproc-per-node")
        nproc = int(argv[k + 1])
        argv = argv[:k] + argv[k + 2:]
    config_path, overrides = flags_to_overrides(argv)
    try:
        cfg = load_config(SFTConfig, config_path, overrides)
    except ConfigError as exc:
        print(f"mindr1 sft: config error: {exc}", file=sys.stderr)
        return 2
    nproc = nproc or cfg.tensor_model_parallel_size * cfg.pipeline_model_parallel_size
    if "LOCAL_RANK" not in os.environ and nproc > 1:
        return _relaunch_ranks(argv, nproc)
    from mindr1.parallel.launch import free_port
    from mindr1.parallel.state import init_distributed

    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    init_distributed(timeout_s=cfg.distributed_timeout_s)
    trainer = SFTTrainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.close()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The actor: the trained policy on Megatron TP x PP (x DP) in a Ray actor group.

Coarse methods over one :class:`RolloutBatch`: ``compute_log_prob`` (old log-probs, inherited),
``update_actor`` (PPO epochs x mini-batches of the clipped GRPO loss, normalised by each
mini-batch's global valid-token count), ``export_weights`` (the resharding weight stream of
``mindr1.rollout.weight_sync`` into Ray's object store, bucket by bucket, for the rollout
engines) and ``save_checkpoint`` / resume (model, optimizer, LR schedule, RNG and the
controller's train state, in Megatron's layout).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch

from mindr1.rl.batch import RolloutBatch, gather_response_BR
from mindr1.rl.workers.megatron_worker import MegatronWorker, ModelSpec

# Metrics that are each micro-batch's share of a global mean: summed, not averaged.
SHARE_METRICS = ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/loss", "rollout/logp_abs_diff_mean",
                 "rollout/logp_abs_diff_over_frac")
# Metrics that are maxima: the max of the parts.
MAX_METRICS = ("rollout/logp_abs_diff_max",)


def combine(key: str, values: list[float]) -> float:
    """Micro-batch / DP parts of one metric into one value (share: sum, maximum: max, else mean)."""
    if key in SHARE_METRICS:
        return sum(values)
    if key in MAX_METRICS:
        return max(values)
    return sum(values) / len(values)


@dataclass
class ActorSettings:
    """The actor's optimisation settings (from ``actor_rollout_ref.actor_rollout`` and ``algorithm``)."""

    save: Optional[str]
    micro_batch_size: int
    mini_batch_size: int
    ppo_epochs: int
    shuffle: bool
    temperature: float
    clip_low: float
    clip_high: Optional[float]
    clip_ratio_c: Optional[float]
    policy_loss: str
    old_logp_from_engine: bool
    mismatch_threshold: float
    entropy_coef: float
    entropy_metric_interval: int
    kl_kind: str
    agg: str
    max_response_length: int
    lr: float
    min_lr: float
    lr_decay_style: str
    lr_warmup_iters: int
    lr_decay_iters: int
    weight_decay: float
    adam_beta1: float
    adam_beta2: float
    clip_grad: float
    use_distributed_optimizer: bool


def grpo_loss_fn(logits_BSV: torch.Tensor, mb: dict, *, s: ActorSettings, vocab_size: int, kl_coef: float,
                 num_valid_tokens: float, num_sequences: float, num_response_tokens: float,
                 with_entropy: bool = True) -> tuple:
    """The GRPO loss of one micro-batch (its share of the mini-batch's global mean) and metrics.

    Old log-probs: the trainer's from before the update (``old_logp_BR``), the engine's with
    ``old_logp_from_engine`` (one-step asynchronous rollout), else this forward's, detached
    (on-policy). The trainer-vs-engine gap is measured here against the pre-update log-probs when
    the temperature is 1 (the engines report temperature-1 log-probs; otherwise the controller
    measures it with a temperature-1 forward). ``loss_mask_B`` (overlong filtering) drops rows from
    the loss; ``is_weights_BR`` (rollout correction) weighs the policy loss. The entropy is
    computed when its coefficient is non-zero or ``with_entropy`` (a metric step).
    """
    from mindr1.models.vocab_parallel import vocab_parallel_logp_entropy
    from mindr1.rl.algos import grpo_loss

    # One vocab-parallel pass (no gathered vocabulary); entropy only for a bonus or a metric step.
    logp_BS, entropy_BS = vocab_parallel_logp_entropy(logits_BSV, mb["labels"], vocab_size, s.temperature,
                                                      with_entropy=with_entropy or s.entropy_coef != 0,
                                                      consume_logits=True)
    logp_BR = gather_response_BR(logp_BS, mb["positions_BR"])
    entropy_BR = None if entropy_BS is None else gather_response_BR(entropy_BS, mb["positions_BR"])
    if entropy_BR is not None and s.entropy_coef == 0:
        entropy_BR = entropy_BR.detach()
    response_mask_BR = mask_BR = mb["response_mask_BR"]
    if "loss_mask_B" in mb:
        mask_BR = mask_BR * mb["loss_mask_B"].unsqueeze(1)
    before_BR = mb.get("old_logp_BR")
    before_BR = logp_BR.detach() if before_BR is None else before_BR
    old_BR = mb["rollout_logp_BR"] if s.old_logp_from_engine else before_BR
    loss, metrics = grpo_loss(logp_BR, old_BR, mb.get("ref_logp_BR"), mb["advantages_B"].unsqueeze(1), mask_BR,
                              policy_loss=s.policy_loss, clip_low=s.clip_low, clip_high=s.clip_high,
                              clip_ratio_c=s.clip_ratio_c, weights_BT=mb.get("is_weights_BR"),
                              kl_coef=kl_coef, kl_kind=s.kl_kind,
                              entropy_BT=entropy_BR, entropy_coef=s.entropy_coef, agg=s.agg,
                              num_valid_tokens=num_valid_tokens, num_sequences=num_sequences,
                              max_tokens=s.max_response_length)
    if "ref_logp_BR" in mb and not kl_coef:
        from mindr1.rl.algos import kl_loss

        metrics.update(kl_loss(logp_BR.detach(), mb["ref_logp_BR"], mask_BR, kind=s.kl_kind, agg=s.agg,
                               num_valid_tokens=num_valid_tokens, num_sequences=num_sequences,
                               max_tokens=s.max_response_length)[1])
    if s.temperature == 1.0 and "rollout_logp_BR" in mb:
        from mindr1.rl.algos import logp_mismatch_metrics

        metrics.update(logp_mismatch_metrics(before_BR, mb["rollout_logp_BR"], response_mask_BR, s.mismatch_threshold,
                                             num_valid_tokens=num_response_tokens))
    return loss, mask_BR.sum().to(torch.int), {k: v.detach().float().cpu() for k, v in metrics.items()}


class ActorWorker(MegatronWorker):
    """One rank of the trained policy."""

    def setup(self, role: str, rank: int, world_size: int, addr: str, port: int, threads: int = 0,
              spec: Optional[ModelSpec] = None, settings: Optional[ActorSettings] = None) -> dict:
        self.settings = settings
        self.train_state: dict = {}
        return super().setup(role, rank, world_size, addr, port, threads, spec)

    def build(self) -> None:
        from mindr1.models.megatron import build_model
        from mindr1.training import checkpointing
        from mindr1.training.optim import (OptimSettings, attach_grad_finalizer, build_optimizer, build_scheduler,
                                           wrap_ddp)

        s = self.settings
        model = build_model(self.arch, self.topology, self.dtype)
        self.model = wrap_ddp(model, model.config, s.use_distributed_optimizer)
        attach_grad_finalizer(model.config, [self.model])
        optim = OptimSettings(lr=s.lr, min_lr=s.min_lr, weight_decay=s.weight_decay, adam_beta1=s.adam_beta1,
                              adam_beta2=s.adam_beta2, clip_grad=s.clip_grad,
                              use_distributed_optimizer=s.use_distributed_optimizer, lr_warmup_iters=s.lr_warmup_iters,
                              lr_decay_iters=s.lr_decay_iters, lr_decay_style=s.lr_decay_style)
        self.optimizer = build_optimizer([self.model], optim, self.dtype)
        self.scheduler = build_scheduler(self.optimizer, optim)
        if checkpointing.latest_iteration(s.save) is not None:
            state = checkpointing.load(s.save, self.ctx, self.model.module, self.optimizer, self.scheduler)
            self.train_state = dict(state["train_state"])
        else:
            self.load_initial(self.model.module)
        self._refresh_main_params()

    def _refresh_main_params(self) -> None:
        # megatron's optimizer copied fp32 main params at construction, before the weights were loaded.
        for opt in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            if hasattr(opt, "reload_model_params"):
                opt.reload_model_params()

    def resume_state(self) -> dict:
        """The controller's train state saved with the checkpoint this rank resumed from ({} for a fresh run)."""
        return self.train_state

    # ------------------------------------------------------------------ training

    def update_actor(self, batch: RolloutBatch, step: int, kl_coef: float, seed: int) -> Optional[dict]:
        """PPO epochs over ``batch``; metrics (averaged over optimizer steps) from output ranks."""
        from mindr1.rl.algos import iter_ppo_minibatches

        s = self.settings
        with_entropy = bool(s.entropy_metric_interval) and step % s.entropy_metric_interval == 0
        history = []
        for _epoch, idx in iter_ppo_minibatches(len(batch), s.mini_batch_size, s.ppo_epochs, shuffle=s.shuffle,
                                                seed=seed * 100_003 + step):
            history.append(self._train_minibatch(batch.select(idx), kl_coef, with_entropy))
        if not self.is_output_rank:
            return None
        keys = history[0].keys()
        return {"dp_rank": self.ctx.dp_rank,
                **{k: (max(h[k] for h in history) if k in MAX_METRICS else sum(h[k] for h in history) / len(history))
                   for k in keys}}

    def _train_minibatch(self, mini: RolloutBatch, kl_coef: float, with_entropy: bool) -> dict:
        from mindr1.training.optim import optimizer_step, zero_grads
        from mindr1.training.schedule import run_pipeline

        s = self.settings
        loss_fn = partial(grpo_loss_fn, s=s, vocab_size=self.arch.vocab_size, kl_coef=kl_coef,
                          num_valid_tokens=float(max(mini.num_loss_tokens, 1)),
                          num_sequences=float(max(mini.num_loss_sequences, 1)),
                          num_response_tokens=float(max(mini.num_response_tokens, 1)), with_entropy=with_entropy)
        micro = self._to_device(self.local_share(mini).trimmed().micro_batches(s.micro_batch_size))
        zero_grads([self.model], self.optimizer)
        outputs = run_pipeline([self.model], micro, loss_fn)
        stats = optimizer_step(self.optimizer, self.scheduler)
        metrics = {"actor/grad_norm": stats["grad_norm"], "actor/lr": stats["lr"]}
        for key in outputs[0] if outputs else ():
            values = [float(o[key]) for o in outputs]
            metrics[key] = combine(key, values)
        return metrics

    # ------------------------------------------------------------------ weights out, checkpoints

    def export_weights(self, bucket_mb: float) -> Optional[list]:
        """Stream this model (TP shards gathered, PP stages in turn) into Ray object-store buckets.

        Only DP replica 0 takes part (the replicas are equal); its global rank 0 returns the
        bucket refs, in order, for :meth:`RolloutWorker.load_weights`.
        """
        from mindr1.rollout.weight_sync import sync_weights

        if self.ctx.dp_rank != 0:
            return None
        sink = _ObjectStoreSink(bucket_mb) if (self.ctx.tp_rank == 0 and self.ctx.pp_rank == 0) else None
        sync_weights(self.model, self.arch, sink, bucket_size_mb=bucket_mb, timeout_s=self.spec.timeout_s)
        return None if sink is None else sink.refs

    def save_checkpoint(self, step: int, train_state: dict, keep_last_n: Optional[int] = None,
                        keep_every_n: Optional[int] = None) -> str:
        from mindr1.checkpoint.mcore_io import megatron_args
        from mindr1.training import checkpointing

        args = megatron_args(self.arch, self.topology.tp, self.topology.pp, None,
                             "bf16" if self.dtype == torch.bfloat16 else "fp32", self.source_args.get("hf_config"),
                             extra={"mindr1_grpo": True})
        path = checkpointing.save(self.settings.save, step, self.ctx, self.model.module, self.optimizer,
                                  self.scheduler, args, train_state, timeout_s=self.spec.timeout_s,
                                  keep_last_n=keep_last_n, keep_every_n=keep_every_n)
        return str(path)

    def modules(self) -> list:
        return [self.model]


class _ObjectStoreSink:
    """A stand-in engine for ``sync_weights``: packs the HF-named stream into buckets put in Ray's object store."""

    def __init__(self, bucket_mb: float):
        self.bucket_bytes = max(1, int(bucket_mb * 2**20))
        self.refs: list = []

    def update_weights(self, weights) -> int:
        import ray

        from mindr1.rollout.weight_sync import iter_packed_buckets

        for header, flat in iter_packed_buckets(weights, self.bucket_bytes):
            # clone: the bucket is a view of a larger buffer, which pickling would copy whole
            self.refs.append(ray.put((header, flat.cpu().clone())))
        return len(self.refs)

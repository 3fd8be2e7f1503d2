"""A Megatron TP x PP (x DP) model inside a Ray actor group: build, load, and per-token log-probs.

Shared by the actor (which adds the optimizer, updates, checkpoints and weight export) and the
reference (forward only). Each rank joins its group's own torch.distributed process group
(``init_distributed`` with the group's RANK / WORLD_SIZE / MASTER_PORT), then megatron's
parallel_state through :class:`ParallelContext`; every collective runs under ``timeout_s``.

Data parallelism: every rank receives the whole batch and keeps its DP share (consecutive rows);
log-probs come back from the last pipeline stage's TP rank 0 of each DP replica.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch

from mindr1.rl.batch import RolloutBatch, gather_response_BR
from mindr1.rl.workers.base import Worker


@dataclass
class ModelSpec:
    """What a Megatron worker builds: the model, where its weights come from, how it is split."""

    model: Optional[str]
    load: Optional[str]
    tp: int
    pp: int
    seed: int = 1234
    bf16: Optional[bool] = None
    timeout_s: float = 600.0


def resolve_arch(spec: ModelSpec):
    """(ModelArch, checkpoint args) from ``model``, an HF ``load`` dir or a Megatron ``load`` checkpoint."""
    from mindr1.models.arch import load_arch
    from mindr1.training.sft import resolve_arch as from_checkpoint

    if spec.model:
        return load_arch(spec.model), {}
    if spec.load and (Path(spec.load) / "config.json").exists():
        return load_arch(spec.load), {}
    return from_checkpoint(SimpleNamespace(model=None, save=None, load=spec.load, tensor_model_parallel_size=spec.tp,
                                           pipeline_model_parallel_size=spec.pp))


def logprob_loss_fn(logits_BSV: torch.Tensor, mb: dict, vocab_size: int, temperature: float) -> tuple:
    """Forward-only 'loss': the response tokens' log-probs, returned as metrics (loss 0)."""
    from mindr1.models.vocab_parallel import vocab_parallel_logprobs

    logp_BS = vocab_parallel_logprobs(logits_BSV, mb["labels"], vocab_size, temperature)
    logp_BR = gather_response_BR(logp_BS, mb["positions_BR"]) * mb["response_mask_BR"]
    zero = logp_BS.sum() * 0.0
    return zero, mb["response_mask_BR"].sum().to(torch.int), {"logp_BR": logp_BR.detach().float().cpu()}


class MegatronWorker(Worker):
    """One rank of a Megatron model group (the actor's or the reference's)."""

    def setup(self, role: str, rank: int, world_size: int, addr: str, port: int, threads: int = 0,
              spec: Optional[ModelSpec] = None) -> dict:
        from mindr1.accelerator import get_accelerator
        from mindr1.parallel.state import ParallelContext, init_distributed
        from mindr1.parallel.topology import Topology

        info = super().setup(role, rank, world_size, addr, port, threads)
        self.spec = spec
        self.acc = get_accelerator()
        init_distributed(timeout_s=spec.timeout_s)
        self.topology = Topology(world_size, spec.tp, spec.pp)
        self.ctx = ParallelContext(self.topology, seed=spec.seed, timeout_s=spec.timeout_s).build()
        self.arch, self.source_args = resolve_arch(spec)
        bf16 = (not self.acc.is_cpu) if spec.bf16 is None else spec.bf16
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.build()
        return {**info, "tp_rank": self.ctx.tp_rank, "pp_rank": self.ctx.pp_rank, "dp_rank": self.ctx.dp_rank}

    def build(self) -> None:
        """Build this rank's stage and load the initial weights (subclasses add an optimizer)."""
        from mindr1.models.megatron import build_model

        self.model = build_model(self.arch, self.topology, self.dtype)
        self.load_initial(self.model)

    def load_initial(self, module) -> None:
        """Weights from ``load``: an HF directory or a Megatron checkpoint of the same TP/PP."""
        from mindr1.models.megatron import load_hf_weights
        from mindr1.training import checkpointing

        load = self.spec.load
        if not load:
            return  # random init from the seed: tests and tiny demos
        if (Path(load) / "config.json").exists():
            load_hf_weights(module, self.arch, load, self.topology)
        else:
            checkpointing.load(load, self.ctx, module, None, None, load_optim=False, load_rng=False)

    # ------------------------------------------------------------------ data parallel helpers

    @property
    def dp(self) -> int:
        return self.topology.world_size // (self.topology.tp * self.topology.pp)

    @property
    def is_output_rank(self) -> bool:
        """Last stage, TP rank 0: where this DP replica's per-token results are read."""
        return self.ctx.is_last_stage and self.ctx.tp_rank == 0

    def local_share(self, batch: RolloutBatch) -> RolloutBatch:
        return batch.chunks(self.dp)[self.ctx.dp_rank]

    def _to_device(self, micro: list[dict]) -> list[dict]:
        if self.acc.is_cpu:
            return micro
        device = self.acc.device()
        return [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in mb.items()} for mb in micro]

    # ------------------------------------------------------------------ coarse methods

    def compute_log_prob(self, batch: RolloutBatch, micro_batch_size: int, temperature: float) -> Optional[dict]:
        """Log-probs of the response tokens of this rank's DP share; ``{"dp_rank", "logp_BR"}`` on output ranks."""
        from mindr1.training.schedule import run_pipeline

        local = self.local_share(batch).trimmed()
        micro = self._to_device(local.micro_batches(micro_batch_size))
        modules = self.modules()
        for m in modules:
            m.eval()
        with torch.no_grad():
            outputs = run_pipeline(modules, micro, partial(logprob_loss_fn, vocab_size=self.arch.vocab_size,
                                                           temperature=temperature), forward_only=True)
        for m in modules:
            m.train()
        if not self.is_output_rank:
            return None
        logp_BR = torch.cat([o["logp_BR"] for o in outputs], dim=0)
        width = batch.response_mask_BR.shape[1]
        if logp_BR.shape[1] < width:  # trimmed: back to the batch's response width
            logp_BR = torch.nn.functional.pad(logp_BR, (0, width - logp_BR.shape[1]))
        return {"dp_rank": self.ctx.dp_rank, "logp_BR": logp_BR}

    def modules(self) -> list:
        return [self.model]

    def shutdown(self) -> None:
        import torch.distributed as dist

        self.ctx.destroy()
        if dist.is_initialized():
            dist.destroy_process_group()


def assemble_dp(results: list[Optional[dict]], key: str = "logp_BR") -> torch.Tensor:
    """The full batch from the output ranks' DP shares (in DP order)."""
    shares = sorted((r for r in results if r is not None), key=lambda r: r["dp_rank"])
    if not shares:
        raise RuntimeError("no output rank returned log-probs")
    return torch.cat([s[key] for s in shares], dim=0)

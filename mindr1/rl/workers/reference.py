"""The reference policy: the initial weights on Megatron TP x PP, forward only, for the KL penalty.

It has its own TP/PP (``actor_rollout_ref.ref``), independent of the actor's, and one coarse
method, ``compute_log_prob`` (from :class:`MegatronWorker`).
"""
from __future__ import annotations

from mindr1.rl.workers.megatron_worker import MegatronWorker


class ReferenceWorker(MegatronWorker):
    """One rank of the frozen reference model."""

    def build(self) -> None:
        super().build()
        for p in self.model.parameters():
            p.requires_grad_(False)

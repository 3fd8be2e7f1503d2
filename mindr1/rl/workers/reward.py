"""The reward worker: rule verifiers (``algorithm.verifier_function``) over decoded completions.

A separate Ray actor so that math-verify's sympy work (and, in the all-scenario stage, a reward
model in the slot ``reward.model``) runs beside the trainer, not in the controller.
"""
from __future__ import annotations

from typing import Optional, Sequence

from mindr1.rl.workers.base import Worker


class RewardWorker(Worker):
    """Scores completions: ``score`` returns combined rewards and each verifier's raw scores."""

    def setup(self, role: str, rank: int, world_size: int, addr: str, port: int, threads: int = 0,
              names: Sequence[str] = (), weights: Optional[Sequence[float]] = None, gate: Optional[str] = None,
              model: Optional[str] = None) -> dict:
        info = super().setup(role, rank, world_size, addr, port, threads)
        if model:
            raise NotImplementedError("reward.model: reward-model scoring comes with the all-scenario stage")
        import mindr1.rl.task_rewards  # noqa: F401  (registers the task verifiers, e.g. `number`)

        self.names, self.weights, self.gate = list(names), weights, gate
        return info

    def score(self, prompts: Sequence[str], completions: Sequence[str], labels: Sequence) -> dict:
        """``{"rewards": [float], "scores": {verifier: [float | None]}, "invalid": {reason: count}}``; a sample
        no verifier applies to, or whose completion is not text, scores 0."""
        from mindr1.rl.rewards import compute_rewards

        invalid: dict = {}
        rewards, scores = compute_rewards(self.names, self.weights, list(prompts), list(completions),
                                          gate=self.gate, counts=invalid, labels=list(labels))
        return {"rewards": [0.0 if r is None else float(r) for r in rewards], "scores": scores, "invalid": invalid}

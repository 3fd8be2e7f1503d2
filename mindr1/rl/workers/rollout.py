"""The rollout worker: one generation engine (HF or vLLM) fed with the actor's weights.

The engine starts with placeholder weights of the model's shape and gets the actor's weights
through :meth:`load_weights` (buckets of the resharding stream, read from Ray's object store one
at a time) before every generation. Colocated with the actor it sleeps while the actor trains.
"""
from __future__ import annotations

from typing import Optional, Sequence

from mindr1.rl.workers.base import Worker


class RolloutWorker(Worker):
    """One engine; ``generate`` returns one group of completions per prompt."""

    def setup(self, role: str, rank: int, world_size: int, addr: str, port: int, threads: int = 0,
              arch=None, engine: Optional[str] = None, seed: int = 0, max_model_len: Optional[int] = None,
              tensor_parallel_size: int = 1) -> dict:
        from mindr1.rollout.base import make_engine

        info = super().setup(role, rank, world_size, addr, port, threads)
        kwargs = {}
        if engine == "vllm":
            kwargs = {"seed": seed, "max_model_len": max_model_len, "tensor_parallel_size": tensor_parallel_size}
        self.engine = make_engine(engine, arch, **kwargs)
        return {**info, "engine": self.engine.kind, "eos_token_ids": self.engine.eos_token_ids}

    def load_weights(self, bucket_refs: list) -> int:
        """Copy the actor's weights in, bucket by bucket (each fetched when the engine asks for it)."""
        import ray

        from mindr1.rollout.weight_sync import unpack_bucket

        def stream():
            for ref in bucket_refs:
                header, flat = ray.get(ref)
                yield from unpack_bucket(header, flat)
                del flat

        return self.engine.update_weights(stream())

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], params) -> list:
        """Groups of ``params.n`` completions (token ids, raw log-probs, finish reason) per prompt."""
        return self.engine.generate(prompt_token_ids, params)

    def generate_timed(self, prompt_token_ids: Sequence[Sequence[int]], params) -> dict:
        """``generate`` with its wall time: ``{"groups", "seconds"}`` (how long generation itself took)."""
        import time

        t0 = time.perf_counter()
        groups = self.engine.generate(prompt_token_ids, params)
        return {"groups": groups, "seconds": time.perf_counter() - t0}

    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self) -> None:
        self.engine.wake_up()

    def shutdown(self) -> None:
        self.engine.close()

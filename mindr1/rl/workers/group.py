"""Ray actor groups: a role's ranks in a placement group, forming their own torch.distributed group.

``RayActorGroup(cls, role, pool, ...)`` starts one Ray actor per rank of ``pool`` (a
:class:`ResourcePool`: a placement group with one bundle per device), passes each its RANK,
WORLD_SIZE and the group's MASTER_ADDR/MASTER_PORT (chosen on rank 0's node), and offers
``call(method, *args)``: the method on every rank, results by rank. Every wait has a timeout and
a dead or failing rank raises :class:`WorkerError` naming the role and rank, so a lost worker
stops the run rather than hanging it (OpenRLHF's ``RayActorGroup``, explicitly, no metaprogramming).

Colocation: two groups built on the same pool with ``share`` = 0.5 each take half of every
bundle's device, so Ray puts rank i of both on the same device (the rollout engine sleeps while
the actor trains).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence


class WorkerError(RuntimeError):
    """A worker died, failed or did not answer in time; the message names its role and rank."""


def device_resource(kind: str) -> str:
    """The Ray resource of one device (the accelerator names it), CPU slots on CPU."""
    from mindr1.accelerator import Accelerator

    # Not get_accelerator(kind): the driver may plan GPU pools from a CPU-only head node.
    return Accelerator(kind).ray_resource() or "CPU"


@dataclass
class ResourcePool:
    """A placement group of ``size`` bundles of one device each (``strategy`` PACK keeps a role together)."""

    name: str
    size: int
    resource: str
    strategy: str = "PACK"
    extra_cpus: float = 0.0
    timeout_s: float = 600.0

    def __post_init__(self):
        from ray.util.placement_group import placement_group

        bundle = {self.resource: 1.0}
        if self.resource != "CPU" and self.extra_cpus:
            bundle["CPU"] = self.extra_cpus
        self.bundles = [dict(bundle) for _ in range(self.size)]
        self.pg = placement_group(self.bundles, strategy=self.strategy, name=f"mindr1-{self.name}-{os.getpid()}")
        if not self._ready():
            raise WorkerError(f"resource pool {self.name!r}: {self.size} x {bundle} could not be placed within "
                              f"{self.timeout_s:.0f} s; the cluster has {_cluster_resources()}")

    def _ready(self) -> bool:
        import ray

        ready, _ = ray.wait([self.pg.ready()], timeout=self.timeout_s)
        return bool(ready)

    def options(self, rank: int, share: float = 1.0) -> dict:
        """Ray actor options placing ``rank`` on bundle ``rank`` with ``share`` of its device."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(placement_group=self.pg, placement_group_bundle_index=rank)
        opts: dict[str, Any] = {"scheduling_strategy": strategy, "num_cpus": 0}
        if self.resource == "CPU":
            opts["num_cpus"] = share
        elif self.resource == "GPU":
            opts["num_gpus"] = share
        else:
            opts["resources"] = {self.resource: share}
        return opts

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        try:
            remove_placement_group(self.pg)
        except Exception:  # the cluster may already be gone at shutdown
            pass


def _cluster_resources() -> dict:
    import ray

    try:
        return {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
    except Exception:
        return {}


class RayActorGroup:
    """``world_size`` Ray actors of ``cls`` for one role; rank r lives on bundle r of ``pool``."""

    def __init__(self, cls, role: str, pool: ResourcePool, world_size: int, init_args: Sequence = (),
                 share: float = 1.0, timeout_s: float = 600.0, env: Optional[dict] = None):
        import ray

        if world_size > pool.size:
            raise WorkerError(f"{role}: {world_size} ranks do not fit the {pool.size} devices of pool {pool.name!r}")
        self.role, self.world_size, self.timeout_s = role, world_size, timeout_s
        remote_cls = ray.remote(cls)
        runtime_env = {"env_vars": {k: str(v) for k, v in (env or {}).items()}} if env else None
        self.actors = []
        for rank in range(world_size):
            opts = pool.options(rank, share)
            if runtime_env:
                opts["runtime_env"] = runtime_env
            self.actors.append(remote_cls.options(name=f"{role}-{rank}-{os.getpid()}-{id(self)}", **opts).remote())
        addr, port = self._get([self.actors[0].master_address.remote()], "master_address")[0]
        self.info = self.call_each("setup", [(role, rank, world_size, addr, port, *init_args)
                                             for rank in range(world_size)])

    # ------------------------------------------------------------------ calls

    def call(self, method: str, *args, **kwargs) -> list:
        """``method(*args, **kwargs)`` on every rank; the results by rank."""
        refs = [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]
        return self._get(refs, method)

    def call_async(self, method: str, *args, **kwargs) -> list:
        """Start ``method`` on every rank; wait for the refs with :meth:`wait`."""
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def call_each(self, method: str, per_rank_args: Sequence[tuple]) -> list:
        """``method(*per_rank_args[r])`` on rank r."""
        refs = [getattr(actor, method).remote(*args) for actor, args in zip(self.actors, per_rank_args)]
        return self._get(refs, method)

    def wait(self, refs: list, method: str) -> list:
        return self._get(refs, method)

    def _get(self, refs: list, method: str) -> list:
        """Results of ``refs`` (rank order) as they finish; the first failure names its rank."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        rank_of = {ref: r for r, ref in enumerate(refs)}
        out: list = [None] * len(refs)
        pending, deadline = list(refs), time.monotonic() + self.timeout_s
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = sorted(rank_of[r] for r in pending)
                raise WorkerError(f"{self.role} ranks {late} did not finish {method}() within {self.timeout_s:.0f} s "
                                  "(training.worker_timeout_s)")
            ref = ready[0]
            rank = rank_of[ref]
            try:
                out[rank] = ray.get(ref, timeout=self.timeout_s)
            except RayActorError as exc:
                raise WorkerError(f"{self.role} rank {rank} died during {method}(): {_first_line(exc)}") from None
            except RayTaskError as exc:
                raise WorkerError(f"{self.role} rank {rank} failed in {method}():\n{exc}") from None
            except GetTimeoutError:
                raise WorkerError(f"{self.role} rank {rank} did not return {method}() within {self.timeout_s:.0f} s")
        return out

    def kill(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already dead
                pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

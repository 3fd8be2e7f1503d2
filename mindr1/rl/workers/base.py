"""What every GRPO worker (a Ray actor) shares: its place in its group and its process settings.

``RayActorGroup`` first asks rank 0 for ``master_address()`` (its node's IP and a free port, so
a group spread over machines rendezvouses on rank 0's node), then calls ``setup(role, rank,
world_size, addr, port, ...)`` on every rank; subclasses extend :meth:`Worker.setup`.
"""
from __future__ import annotations

import os
import socket


class Worker:
    """Base of the actor, reference, rollout and reward workers."""

    role: str = "worker"
    rank: int = 0
    world_size: int = 1

    def master_address(self) -> tuple[str, int]:
        """This node's address and a free TCP port on it, for the group's torch.distributed rendezvous."""
        import ray

        addr = ray.util.get_node_ip_address()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
            return addr, s.getsockname()[1]

    def setup(self, role: str, rank: int, world_size: int, addr: str, port: int, threads: int = 0) -> dict:
        """Record the place in the group, export torch.distributed's env, pin CPU threads."""
        import warnings

        import torch

        # megatron-core warns once per import about missing transformer-engine/apex (CPU runs have neither)
        warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex|cuda_graph_scope).*")
        self.role, self.rank, self.world_size = role, rank, world_size
        os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0",
                           "MASTER_ADDR": addr, "MASTER_PORT": str(port)})
        if threads > 0:
            torch.set_num_threads(threads)
        return self.describe()

    def describe(self) -> dict:
        """Where this worker runs: role, rank, pid, node (for messages, tests and the fault examples)."""
        import ray

        return {"role": self.role, "rank": self.rank, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname()}

    def ping(self) -> int:
        return os.getpid()

    def peak_rss_mb(self) -> float:
        """Peak resident memory of this process (MiB)."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def device_memory(self) -> dict:
        """Memory of this process in GiB (RSS; on a device also allocated, peak since the last call, and
        the whole device's used memory), then the peak counter is reset: a caller reads it per phase."""
        from mindr1.accelerator import get_accelerator

        acc = get_accelerator()
        stats = acc.memory_stats()
        if acc.module is not None:
            free, total = acc.module.mem_get_info()
            stats["device_used_gib"] = (total - free) / 2**30
            acc.module.reset_peak_memory_stats()
        return stats

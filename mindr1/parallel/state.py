"""Process groups: torch.distributed + megatron-core's parallel_state, built and torn down explicitly.

megatron's ``parallel_state`` is module-global; :class:`ParallelContext` is the one object that
creates it from a :class:`Topology`, applies the accelerator's adaptor (CPU or Ascend), seeds the
model-parallel RNG, and destroys it again, so tests can build several layouts in one process.
Every collective runs under the timeout given here, so a dead peer is an error, not a hang.
"""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from mindr1.accelerator import Accelerator, get_accelerator
from mindr1.parallel.topology import Topology

DEFAULT_TIMEOUT_S = 600


def init_distributed(accelerator: Optional[Accelerator] = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                     rank: Optional[int] = None, world_size: Optional[int] = None,
                     init_method: Optional[str] = None) -> tuple[int, int]:
    """Initialise torch.distributed from torchrun's environment (or the arguments). Returns (rank, world)."""
    acc = accelerator or get_accelerator()
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not acc.is_cpu:
        acc.set_device(local_rank % max(acc.device_count(), 1))
    timeout = datetime.timedelta(seconds=timeout_s)
    store = None
    if init_method is None:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        if is_loopback(os.environ["MASTER_ADDR"]) and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            store = loopback_store(rank, world_size, timeout)
        else:
            init_method = "env://"
    dist.init_process_group(backend=acc.dist_backend, init_method=init_method, store=store, rank=rank,
                            world_size=world_size, timeout=timeout)
    return rank, world_size


def is_loopback(host: str) -> bool:
    return host.strip("[]") in ("127.0.0.1", "localhost", "::1")


def loopback_store(rank: int, world_size: int, timeout: datetime.timedelta) -> dist.TCPStore:
    """The rendezvous store of a single-machine group, listening on MASTER_ADDR (a loopback address) only.

    torch's own ``env://`` store listens on every interface (``::``) whatever MASTER_ADDR says, so
    rank 0 binds the listening socket itself and hands it to the store. gloo's sockets follow
    ``GLOO_SOCKET_IFNAME``, set here to the loopback interface unless the user chose one.
    """
    addr, port = os.environ["MASTER_ADDR"].strip("[]"), int(os.environ["MASTER_PORT"])
    addr = "127.0.0.1" if addr == "localhost" else addr
    os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_interface())
    if rank != 0:
        return dist.TCPStore(addr, port, world_size, False, timeout)
    sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(max(128, world_size))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"rendezvous: cannot listen on {addr}:{port} (MASTER_ADDR:MASTER_PORT): {exc}") from None
    return dist.TCPStore(addr, port, world_size, True, timeout, master_listen_fd=sock.detach())


def _loopback_interface() -> str:
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addrs):
            return name
    return "lo"


@dataclass
class ParallelContext:
    """megatron parallel_state for one :class:`Topology`; use as a context manager or call build/destroy."""

    topology: Topology
    seed: int = 1234
    timeout_s: float = DEFAULT_TIMEOUT_S
    accelerator: Optional[Accelerator] = None

    def __post_init__(self):
        self.accelerator = self.accelerator or get_accelerator()

    def build(self) -> "ParallelContext":
        from megatron.core import parallel_state as ps
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised; call init_distributed() first")
        if dist.get_world_size() != self.topology.world_size:
            raise RuntimeError(f"topology is for world size {self.topology.world_size} but torch.distributed "
                               f"has {dist.get_world_size()} processes")
        apply_adaptor(self.accelerator)
        if ps.model_parallel_is_initialized():
            ps.destroy_model_parallel()
        ps.initialize_model_parallel(
            tensor_model_parallel_size=self.topology.tp,
            pipeline_model_parallel_size=self.topology.pp,
            virtual_pipeline_model_parallel_size=self.topology.vpp,
            distributed_timeout_minutes=max(1, int(round(self.timeout_s / 60))),
        )
        self.accelerator.manual_seed(self.seed)
        model_parallel_cuda_manual_seed(self.seed)
        return self

    def destroy(self) -> None:
        from megatron.core import parallel_state as ps

        if ps.model_parallel_is_initialized():
            ps.destroy_model_parallel()

    def __enter__(self) -> "ParallelContext":
        return self.build()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # Coordinates of this process, read from megatron once the groups exist.
    @property
    def tp_rank(self) -> int:
        from megatron.core import parallel_state as ps
        return ps.get_tensor_model_parallel_rank()

    @property
    def pp_rank(self) -> int:
        from megatron.core import parallel_state as ps
        return ps.get_pipeline_model_parallel_rank()

    @property
    def dp_rank(self) -> int:
        from megatron.core import parallel_state as ps
        return ps.get_data_parallel_rank()

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.topology.pp - 1


def apply_adaptor(accelerator: Accelerator) -> None:
    """CPU: patch megatron-core for gloo (see cpu_adaptor). Ascend: import MindSpeed. CUDA: nothing."""
    if accelerator.is_cpu:
        from mindr1.parallel import cpu_adaptor

        cpu_adaptor.apply()
    elif accelerator.kind == "npu":
        from mindr1.parallel import cpu_adaptor

        cpu_adaptor.apply_ascend()


def timeout_tensor_op(op, *args, timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs):
    """Run an async collective and wait for it with a timeout (raises RuntimeError naming the op)."""
    work = op(*args, async_op=True, **kwargs)
    if not work.wait(timeout=datetime.timedelta(seconds=timeout_s)):
        raise RuntimeError(f"{getattr(op, '__name__', op)} did not finish within {timeout_s} s")
    return work


def barrier(timeout_s: float = DEFAULT_TIMEOUT_S, group=None) -> None:
    timeout_tensor_op(dist.barrier, group=group, timeout_s=timeout_s)


def broadcast_object(obj, src: int = 0, group=None):
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def cpu_threads_per_rank(world_size: int) -> int:
    """Threads per process so that ranks on one host don't oversubscribe its cores."""
    return max(1, (os.cpu_count() or 1) // max(world_size, 1))


def set_cpu_threads(world_size: int) -> None:
    torch.set_num_threads(cpu_threads_per_rank(world_size))

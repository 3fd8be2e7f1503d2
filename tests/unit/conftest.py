"""Fixtures shared by the unit tests."""
from __future__ import annotations

import os
import socket

import pytest


@pytest.fixture(scope="module")
def mcore_single_process():
    """One-process gloo group with megatron's parallel state (TP=PP=1) and the CPU adaptor, for tests
    that build a real GPTModel. Left initialised for the rest of the session (other modules reuse it)."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", world_size=1, rank=0)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(1, 1)
    from mindr1.parallel import cpu_adaptor
    cpu_adaptor.apply()
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
    model_parallel_cuda_manual_seed(1234)  # attention forks the model-parallel RNG (CPU-backed here)
    yield

"""The one place that knows CUDA, Ascend NPU and CPU.

Everything else asks this module for the device, the torch.distributed backend, seeding,
synchronisation and memory figures. The accelerator is chosen by what is available
(torch_npu + an NPU, then CUDA, then CPU) unless ``MINDR1_ACCELERATOR`` or a config field
(``training.accelerator``) names one.
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("cuda", "npu", "cpu")
_PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0,
                     "L40S": 362.0, "910B": 313.0, "910C": 376.0}
_DIST_BACKEND = {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}


@dataclass(frozen=True)
class Accelerator:
    kind: str  # "cuda" | "npu" | "cpu"

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def dist_backend(self) -> str:
        return _DIST_BACKEND[self.kind]

    @property
    def module(self):
        """torch.cuda / torch.npu; None on CPU."""
        return None if self.is_cpu else getattr(torch, self.kind)

    def device(self, local_rank: int | None = None) -> torch.device:
        if self.is_cpu:
            return torch.device("cpu")
        index = self.module.current_device() if local_rank is None else local_rank
        return torch.device(self.kind, index)

    def set_device(self, local_rank: int) -> None:
        if not self.is_cpu:
            self.module.set_device(local_rank)

    def device_count(self) -> int:
        return 0 if self.is_cpu else self.module.device_count()

    def synchronize(self) -> None:
        if not self.is_cpu:
            self.module.synchronize()

    def empty_cache(self) -> None:
        if not self.is_cpu:
            self.module.empty_cache()

    def manual_seed(self, seed: int) -> None:
        """Seed python, numpy, torch and the device generators."""
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        if not self.is_cpu:
            self.module.manual_seed_all(seed)

    def rng_state(self) -> dict:
        state = {"python": random.getstate(), "numpy": np.random.get_state(),
                 "torch": torch.get_rng_state()}
        if not self.is_cpu:
            state[self.kind] = self.module.get_rng_state()
        return state

    def set_rng_state(self, state: dict) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if not self.is_cpu and self.kind in state:
            self.module.set_rng_state(state[self.kind])

    def memory_stats(self) -> dict[str, float]:
        """Memory in GiB: process RSS always; allocated / reserved / peak on a device."""
        import psutil

        stats = {"rss_gib": psutil.Process().memory_info().rss / 2**30}
        if not self.is_cpu:
            stats["allocated_gib"] = self.module.memory_allocated() / 2**30
            stats["reserved_gib"] = self.module.memory_reserved() / 2**30
            stats["peak_allocated_gib"] = self.module.max_memory_allocated() / 2**30
        return stats

    def default_dtype(self) -> torch.dtype:
        """fp32 on CPU (exact parity tests), bf16 on accelerators."""
        return torch.float32 if self.is_cpu else torch.bfloat16

    def peak_tflops(self, dtype: torch.dtype) -> float | None:
        """Dense peak TFLOP/s of one device for MFU (bf16/fp16), None when unknown or on CPU."""
        if self.is_cpu or dtype not in (torch.bfloat16, torch.float16):
            return None
        name = self.module.get_device_name()
        for key, tflops in _PEAK_BF16_TFLOPS.items():
            if key in name:
                return tflops
        return None

    def visible_devices_env(self) -> str:
        return {"cuda": "CUDA_VISIBLE_DEVICES", "npu": "ASCEND_RT_VISIBLE_DEVICES"}.get(self.kind, "")

    def ray_resource(self) -> str | None:
        """Ray's name for one device of this kind ("GPU"; "NPU" for Ascend), None on CPU."""
        return {"cuda": "GPU", "npu": "NPU"}.get(self.kind)


def _npu_available() -> bool:
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return bool(getattr(torch, "npu", None)) and torch.npu.is_available()


def detect() -> str:
    if _npu_available():
        return "npu"
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


@functools.lru_cache(maxsize=None)
def _get(kind: str) -> Accelerator:
    if kind not in KINDS:
        raise ValueError(f"accelerator {kind!r} is not one of {KINDS}")
    if kind != "cpu" and kind != detect():
        raise RuntimeError(f"accelerator {kind!r} was asked for but this machine has {detect()!r}")
    return Accelerator(kind)


def get_accelerator(kind: str | None = None) -> Accelerator:
    """The accelerator named by ``kind``, ``$MINDR1_ACCELERATOR``, or the one detected."""
    kind = kind or os.environ.get("MINDR1_ACCELERATOR") or detect()
    return _get(kind)

"""What every step of the GPU check shares: the mode (device or CPU dry run), sizes, tolerances, results.

A step is a function ``step(ctx) -> Result`` registered by name in ``STEPS`` (see ``run_step.py``).
It records what it checked in ``Result.checks`` (name, passed, value, limit) and figures in
``Result.figures``; a failed check fails the step but the step still reports everything it measured.
``GPU_CHECK_DRY=1`` runs every step on the CPU (gloo, fp32 where the GPU uses bf16 only where the CPU
cannot, tiny shapes): the same code paths, only the device and the sizes differ.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[2]

# Tolerances, stated once (README "Running on a GPU" repeats them).
TOL = {
    # megatron vs HF transformers, same device, same dtype of weights
    "logits_fp32_max_abs": 1e-3,      # CPU CI holds 1e-4; CUDA fp32 matmuls reorder sums
    "logits_bf16_rel_norm": 2e-2,     # ||mcore_bf16 - hf_fp32|| / ||hf_fp32||, and within 2x HF bf16's own error
    "grads_fp32_max_abs": 1e-4,       # parity: TP/PP layouts and megatron vs HF (fp32)
    "loss_fp32_abs": 1e-5,
    "engine_logprob_fp32_max_abs": 1e-3,  # engine (vLLM/HF) vs transformers, greedy, fp32
    "sync_logp_fp32_mean": 1e-4,      # GRPO: |engine logp - actor logp| on sampled tokens, fp32 run
    "sync_logp_bf16_mean": 5e-2,      # same, bf16 run (different kernels on each side)
}


def dry() -> bool:
    return os.environ.get("GPU_CHECK_DRY") == "1"


def work_dir() -> Path:
    path = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/mindr1-gpu-check"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_count() -> int:
    if dry():
        return 0
    import torch

    return torch.cuda.device_count()


@dataclass
class Check:
    name: str
    passed: bool
    value: Any = None
    limit: Any = None


@dataclass
class Result:
    status: str = "passed"  # passed | failed | skipped
    reason: str = ""
    checks: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    seconds: float = 0.0

    def check(self, name: str, passed: bool, value: Any = None, limit: Any = None) -> bool:
        self.checks.append(Check(name, bool(passed), _plain(value), _plain(limit)))
        if not passed and self.status == "passed":
            self.status = "failed"
            self.reason = f"check {name} failed: value {_plain(value)} limit {_plain(limit)}"
        return bool(passed)

    def skip(self, reason: str) -> "Result":
        self.status, self.reason = "skipped", reason
        return self


def _plain(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if hasattr(x, "item") and callable(x.item):
        try:
            return _plain(x.item())
        except (RuntimeError, ValueError):
            return str(x)
    return x


def importable(module: str) -> Optional[str]:
    """None when ``module`` imports, else the reason it does not (first line of the error)."""
    try:
        __import__(module)
    except Exception as exc:  # ImportError, but also a broken build raising OSError / RuntimeError
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def engine_kind() -> tuple[str, str]:
    """The rollout engine the check uses: vllm when it imports, else hf (with why)."""
    why = importable("vllm")
    if why is None:
        return "vllm", ""
    return "hf", f"vllm not importable ({why[:120]}); the HF engine stands in"


def run(name: str, fn: Callable[[Result], Optional[Result]]) -> Result:
    """Run one step, catching everything: a raised error is a failed step with its traceback's tail."""
    res = Result()
    t0 = time.perf_counter()
    try:
        out = fn(res)
        res = out if isinstance(out, Result) else res
    except BaseException as exc:  # noqa: BLE001 - a check records every failure and goes on
        res.status = "failed"
        lines = [x for x in str(exc).strip().splitlines() if x.strip()] or [""]
        # a LaunchError carries the rank's traceback: its first and last lines say what happened
        res.reason = f"{type(exc).__name__}: {lines[0][:300]}" + (f" ... {lines[-1][:300]}" if len(lines) > 1 else "")
        res.details["traceback"] = traceback.format_exc()[-4000:]
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def write_result(name: str, res: Result, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"name": name, **asdict(res)}, indent=1, default=str))
    os.replace(tmp, path)
    return path


def memory_now() -> dict:
    """Device memory of this process (peak since the last reset) and of the whole device, in GiB."""
    from mindr1.accelerator import get_accelerator

    acc = get_accelerator()
    stats = acc.memory_stats()
    if acc.module is not None:
        free, total = acc.module.mem_get_info()
        stats["device_used_gib"] = (total - free) / 2**30
    return {k: round(v, 3) for k, v in stats.items()}

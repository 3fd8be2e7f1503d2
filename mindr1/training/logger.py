"""Metrics out of a training run: console (with a progress bar), JSON lines, TensorBoard, optional wandb.

Only the logging rank (last pipeline stage, TP and DP rank 0: where losses are known) creates
a :class:`MetricsLogger`; every sink is optional and fails soft (a missing tensorboard or wandb
package is reported once, not fatal).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional


class MetricsLogger:
    def __init__(self, total_steps: int, jsonl_path: Optional[str | Path] = None,
                 tensorboard_dir: Optional[str | Path] = None, wandb_project: Optional[str] = None,
                 run_name: str = "mindr1", start_step: int = 0, config: Optional[dict] = None,
                 progress: bool = True):
        self.total_steps = total_steps
        self.jsonl = None
        if jsonl_path:
            Path(jsonl_path).parent.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(jsonl_path, "a", encoding="utf-8")
        self.tb = self._tensorboard(tensorboard_dir)
        self.wandb = self._wandb(wandb_project, run_name, config)
        self.bar = None
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=run_name, dynamic_ncols=True)
        self.t0 = time.perf_counter()

    @staticmethod
    def _tensorboard(log_dir):
        if not log_dir:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is an install requirement; report, don't fail
            print(f"[mindr1] tensorboard unavailable ({exc}); not writing {log_dir}", file=sys.stderr)
            return None
        return SummaryWriter(log_dir=str(log_dir))

    @staticmethod
    def _wandb(project, run_name, config):
        if not project:
            return None
        try:
            import wandb
        except ImportError:
            print("[mindr1] wandb_project is set but wandb is not installed; skipping wandb", file=sys.stderr)
            return None
        return wandb.init(project=project, name=run_name, config=config or {})

    def log(self, step: int, metrics: dict, console: bool = True) -> None:
        clean = {k: (float(v) if hasattr(v, "__float__") else v) for k, v in metrics.items()}
        if self.jsonl:
            self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
            self.jsonl.flush()
        if self.tb:
            for k, v in clean.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb:
            self.wandb.log(clean, step=step)
        if console:
            text = " | ".join(_fmt(k, v) for k, v in clean.items())
            line = f"step {step}/{self.total_steps} | {text}"
            if self.bar:
                self.bar.write(line)
            else:
                print(line, flush=True)

    def advance(self, n: int = 1) -> None:
        if self.bar:
            self.bar.update(n)

    def close(self) -> None:
        for sink in (self.jsonl, self.tb, self.bar):
            if sink:
                sink.close()
        if self.wandb:
            self.wandb.finish()


def _fmt(key: str, value) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{key} {value:.3e}"
        return f"{key} {value:.4f}"
    return f"{key} {value}"


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]

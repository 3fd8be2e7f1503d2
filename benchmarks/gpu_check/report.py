"""Collect the steps' results into ``gpu_report.json``, ``gpu_summary.txt`` and ``gpu_check_logs.txt``.

Standard library only: it runs with the machine's own python even when the install step failed.
A step that never wrote a result (not selected, or the script died before it) is listed as
``not run``, so the report always names every step.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

STEP_ORDER = ("install", "hf_logits_local", "parity_local_fp32", "hf_logits_te", "sft_figures", "weight_sync_figures",
              "grpo_tiny_colocated", "grpo_smollm2_colocated", "grpo_tiny_separate", "grpo_smollm2_separate",
              "convert_engine")


def _git_rev(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or "no GPU"
    except (OSError, subprocess.SubprocessError):
        return "no GPU (nvidia-smi not found)"


def build(work: Path, started: float) -> dict:
    steps = []
    for name in STEP_ORDER:
        path = work / "steps" / f"{name}.json"
        if path.exists():
            steps.append(json.loads(path.read_text()))
        else:
            steps.append({"name": name, "status": "not run", "reason": "not selected (GPU_CHECK_STEPS) or never reached",
                          "checks": [], "figures": {}, "details": {}, "seconds": 0.0})
    figures = {k: v for s in steps for k, v in s.get("figures", {}).items()}
    repo = Path(__file__).resolve().parents[2]
    meta = {"dry_run": os.environ.get("GPU_CHECK_DRY") == "1", "host": platform.node(), "git": _git_rev(repo),
            "device": _device(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_s": round(time.time() - started, 1), "load_avg": os.getloadavg(), "cpus": os.cpu_count(),
            "imports": next((s["details"].get("imports") for s in steps if s["name"] == "install"), None)}
    counts = {}
    for s in steps:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    return {"meta": meta, "counts": counts, "steps": steps, "figures": figures}


def summary(report: dict) -> str:
    m = report["meta"]
    lines = [f"mindr1 GPU check{' (CPU dry run)' if m['dry_run'] else ''} - git {m['git']} - {m['device']} - "
             f"{m['started']} - {m['wall_s']} s - load {', '.join(f'{x:.2f}' for x in m['load_avg'])}",
             f"{'step':<24} {'status':<8} {'s':>6}  reason / checks"]
    for s in report["steps"]:
        checks = s.get("checks", [])
        ok = sum(c["passed"] for c in checks)
        note = s.get("reason") or (f"{ok}/{len(checks)} checks" if checks else "")
        lines.append(f"{s['name']:<24} {s['status']:<8} {s.get('seconds', 0):6.1f}  {note[:150]}")
    f = report["figures"]
    if "sft" in f:
        x = f["sft"]
        lines.append(f"SFT {x['model']} {x['dtype']} seq {x['seq']}: {x['tokens_per_s']} tokens/s vs HF loop "
                     f"{x['baseline_hf_loop_tokens_per_s']} ({x['ratio_vs_hf_loop']}x); "
                     f"MFU {x.get('mfu_vs_datasheet', x.get('mfu'))} of datasheet, {x.get('mfu_vs_measured_matmul', '-')} "
                     f"of measured matmul ({x.get('measured_matmul_tflops', '-')} TFLOP/s)")
    if "weight_sync" in f:
        x = f["weight_sync"]
        lines.append(f"weight sync {x['model']} -> {x['engine'].split(' (')[0]}: {x['sync_s']} s, {x['sync_GB_per_s']} GB/s "
                     f"vs device copy of the same {x['bytes'] / 1e9:.2f} GB {x['baseline_copy_s']} s, "
                     f"{x['baseline_copy_GB_per_s']} GB/s ({x['sync_over_copy']}x)")
    for k, x in sorted(f.items()):
        if k.startswith("grpo_"):
            mem = ", ".join(f"{p} {v['worker_peak_gib']}/{v['device_used_gib']}" for p, v in x["memory_per_phase"].items())
            lines.append(f"{k} {x['dtype']} {x['engine']}: step {x['step_s']} s ("
                         + ", ".join(f"{p} {v}" for p, v in x["phases_s"].items()) + f"); memory GiB peak/device-used: {mem}")
    c = report["counts"]
    lines.append("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--started", type=float, default=time.time())
    opts = p.parse_args()
    report = build(opts.work, opts.started)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "gpu_report.json").write_text(json.dumps(report, indent=1, default=str))
    text = summary(report)
    (opts.out / "gpu_summary.txt").write_text(text)
    with open(opts.out / "gpu_check_logs.txt", "w") as fh:
        for name in ("venv", *STEP_ORDER):
            log = opts.work / "logs" / f"{name}.log"
            if log.exists():
                body = log.read_text(errors="replace")
                fh.write(f"===== {name} ({len(body)} chars, last 20000) =====\n{body[-20000:]}\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

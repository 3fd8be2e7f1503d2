"""Run one step of the GPU check in this process and write its result: ``python run_step.py NAME``.

The shell script starts one process per step (each under ``timeout``), so a crash, a hang or an
out-of-memory in one step is recorded and the next step still runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: `gpu_check` is a package there


def steps() -> dict:
    from gpu_check import correctness, figures, grpo

    return {
        "parity_local_fp32": correctness.step_parity,
        "hf_logits_local": lambda r: correctness.step_hf_logits(r, "local"),
        "hf_logits_te": lambda r: correctness.step_hf_logits(r, "te"),
        "convert_engine": correctness.step_convert_engine,
        "sft_figures": figures.step_sft,
        "weight_sync_figures": figures.step_weight_sync,
        "grpo_tiny_colocated": lambda r: grpo.step_grpo(r, "tiny", colocated=True),
        "grpo_tiny_separate": lambda r: grpo.step_grpo(r, "tiny", colocated=False),
        "grpo_smollm2_colocated": lambda r: grpo.step_grpo(r, "smollm2", colocated=True),
        "grpo_smollm2_separate": lambda r: grpo.step_grpo(r, "smollm2", colocated=False),
    }


def main() -> int:
    from gpu_check.common import run, work_dir, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    opts = p.parse_args()
    table = steps()
    if opts.name not in table:
        print(f"unknown step {opts.name!r}; steps: {', '.join(table)}", file=sys.stderr)
        return 2
    res = run(opts.name, table[opts.name])
    write_result(opts.name, res, work_dir() / "steps")
    print(f"[gpu_check] {opts.name}: {res.status} ({res.seconds:.1f} s) {res.reason}", flush=True)
    if res.status == "failed" and "traceback" in res.details:
        print(res.details["traceback"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

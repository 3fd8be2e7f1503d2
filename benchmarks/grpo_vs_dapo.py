"""GRPO vs DAPO on real SmolLM2-135M-Instruct, reasoning-gym chain_sum, for the same wall-clock budget.

Baseline: GRPO (configs/rlxf/grpo_r1_zero_smollm2_cpu.yaml); challenger: DAPO (configs/rlxf/dapo_smollm2_cpu.yaml:
clip-higher, dynamic sampling, token-level loss, overlong shaping). Same prompts per step, group size, new
tokens, lr and held-out prompts; each side runs in its own process, one after the other, and trains until
its budget of training seconds (start-up and evaluations not counted) is spent. Prints, per side: steps
done, held-out accuracy (greedy, the `number` verifier) before -> after, the zero-variance share of the
groups it generated, tokens generated; then DAPO's figures against GRPO's.

    python benchmarks/grpo_vs_dapo.py --budget-s 900                          # the comparison
    python benchmarks/grpo_vs_dapo.py --budget-s 20 --prompts 2 --max-new-tokens 16 --eval-samples 4 \\
        --train 40 --test 8                                                   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"grpo": "configs/rlxf/grpo_r1_zero_smollm2_cpu.yaml", "dapo": "configs/rlxf/dapo_smollm2_cpu.yaml"}


def smollm2() -> str:
    from mindr1.artifacts import smollm2_dir

    return str(smollm2_dir())


def make_data(out: str, train: int, test: int) -> None:
    """ANCHORS.md's task: chain_sum, 2-3 terms, 1-2 digits; train and held-out prompts preprocessed for mindr1."""
    subprocess.run([sys.executable, "examples/r1_zero/make_arithmetic_data.py", "--out", out, "--train", str(train),
                    "--test", str(test), "--terms", "2,3", "--digits", "1,2"], cwd=ROOT, check=True)
    for split in ("train", "test"):
        subprocess.run([sys.executable, "tools/preprocess_data.py", "--input", f"{out}/{split}.jsonl",
                        "--output-prefix", f"{out}/{split}", "--handler-name", "R1AlpacaStyleInstructionHandler",
                        "--prompt-type", "smollm_r1_zero", "--templates-file", "configs/rlxf/templates_r1_zero.json",
                        "--map-keys", '{"prompt":"question","query":"","response":"answer","system":"","history":""}',
                        "--dataset-additional-keys", "labels", "--tokenizer-name-or-path", smollm2(),
                        "--no-progress-bar"], cwd=ROOT, check=True)


def run_side(args) -> dict:
    """One algorithm in this process: evaluate, train for the budget, evaluate."""
    import ray

    from mindr1.config import load_config
    from mindr1.rl.config import GRPOConfig
    from mindr1.rl.controller import GRPOController

    n = args.prompts
    cfg = load_config(GRPOConfig, ROOT / CONFIGS[args.side], [
        f"actor_rollout_ref.actor_rollout.load={smollm2()}", f"actor_rollout_ref.actor_rollout.data_path={args.data}/train",
        f"training.eval_data_path={args.data}/test", f"training.eval_samples={args.eval_samples}",
        "training.train_iters=100000", "training.plot=false", f"training.global_batch_size={n}",
        f"actor_rollout_ref.actor_rollout.ppo_mini_batch_size={n}",
        f"actor_rollout_ref.actor_rollout.n_samples_per_prompt={args.group}",
        f"actor_rollout_ref.actor_rollout.micro_batch_size={n * args.group}",
        f"actor_rollout_ref.actor_rollout.max_response_length={args.max_new_tokens}",
        f"training.cpu_threads_per_worker={args.threads}"]
        + ([f"algorithm.overlong_buffer_length={max(1, args.max_new_tokens // 5)}"] if args.side == "dapo" else []))
    controller = None
    try:
        controller = GRPOController(cfg)
        controller.sync_weights()
        before = controller.evaluate()
        history, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < args.budget_s:
            history.append(controller.train_step())
            controller.step += 1
        train_s = time.perf_counter() - t0
        after = controller.evaluate()
    finally:
        if controller is not None:
            controller.close()
        if ray.is_initialized():
            ray.shutdown()
    zero_key = "dynamic_sampling/drawn_zero_std_group_frac" if args.side == "dapo" else "reward/zero_std_group_frac"
    return {"steps": len(history), "train_s": train_s, "acc_before": before["eval/rewards/number"],
            "acc_after": after["eval/rewards/number"], "format_after": after["eval/format"],
            "zero_var_share": sum(h[zero_key] for h in history) / len(history),
            "gen_tokens": sum(h["rollout/generated_tokens"] for h in history),
            "rounds": sum(h.get("dynamic_sampling/rounds", 1.0) for h in history) / len(history)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=900.0, help="training seconds per side")
    p.add_argument("--prompts", type=int, default=6, help="prompts per step (groups in a DAPO batch)")
    p.add_argument("--group", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--eval-samples", type=int, default=64)
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--test", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: the config's default)")
    p.add_argument("--data", default=None, help="dir with train_* / test_* prompts (default: made here)")
    p.add_argument("--side", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        print("RESULT " + json.dumps(run_side(args)))
        return
    if args.data is None:
        args.data = tempfile.mkdtemp()
        make_data(args.data, args.train, args.test)
    results = {}
    for side in ("grpo", "dapo"):
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--data", args.data, "--side", side],
                               cwd=ROOT, capture_output=True, text=True)
        line = next((x for x in child.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{side} failed:\n{child.stderr[-3000:]}")
        results[side] = json.loads(line[7:])
    print(f"GRPO vs DAPO, SmolLM2-135M chain_sum, {args.prompts} prompts x {args.group}, {args.max_new_tokens} new "
          f"tokens, {args.budget_s:.0f} s of training each, {args.eval_samples} held-out prompts (greedy)")
    for side, r in results.items():
        print(f"  {side:5s} {r['steps']:4d} steps  held-out acc {r['acc_before']:.3f} -> {r['acc_after']:.3f}  "
              f"format {r['format_after']:.3f}  zero-variance groups {r['zero_var_share']:.0%}  "
              f"tokens generated {r['gen_tokens']:.0f}  rounds/step {r['rounds']:.2f}")
    g, d = results["grpo"], results["dapo"]
    print(f"  DAPO vs GRPO: held-out acc gain {d['acc_after'] - d['acc_before']:+.3f} vs "
          f"{g['acc_after'] - g['acc_before']:+.3f}; tokens generated x{d['gen_tokens'] / max(g['gen_tokens'], 1):.2f}; "
          f"steps x{d['steps'] / max(g['steps'], 1):.2f}")


if __name__ == "__main__":
    main()

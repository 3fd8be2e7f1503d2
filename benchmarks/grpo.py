"""GRPO step speed and memory: mindr1 (Ray, Megatron actor, HF engine) vs TRL's GRPOTrainer, same run.

Same model (real SmolLM2-135M-Instruct), task (reasoning-gym chain_sum, ANCHORS.md setup), prompts per
step, group size, max new tokens, lr and beta 0 (no reference) on this CPU; each side runs in its own
process, one after the other. Prints seconds per step, prompts/s, generated tokens/s and peak RSS.

    pip install trl==1.16.0 reasoning-gym==0.1.25     # benchmark only; not mindr1 dependencies
    python benchmarks/grpo.py --steps 4 --prompts 1 --group 8 --max-new-tokens 64
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trl_side(args) -> dict:
    """TRL GRPOTrainer steps in this process (run as a child: `--side trl`)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mindr1.artifacts import smollm2_dir

    torch.set_num_threads(args.threads)
    rows = [json.loads(x) for x in open(Path(args.data) / "train.jsonl")]
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Compute {r['question']}"}], "answer": r["answer"]}
                            for r in rows])

    def reward(completions, answer, **_):
        import mindr1.rl.task_rewards as t
        return [float(t.final_number(c[0]["content"]) == int(a)) for c, a in zip(completions, answer)]

    times, lengths = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

        def on_log(self, *a, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    n = args.prompts * args.group
    cfg = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=n, num_generations=args.group,
                     max_completion_length=args.max_new_tokens, learning_rate=1e-5, lr_scheduler_type="constant",
                     beta=0.0, temperature=1.0, max_steps=args.steps, logging_steps=1, report_to=[], use_cpu=True,
                     save_strategy="no", seed=1234, gradient_accumulation_steps=1)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[Timer()])
    trainer.train()
    # step 1 is left out on both sides (warm-up); tokens: generated completion tokens per step
    return {"step_s": times[1:] or times, "gen_tokens": [x * n for x in lengths[1:] or lengths],
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def mindr1_side(args) -> dict:
    """mindr1 GRPO steps through `mindr1 grpo` (its metrics.jsonl holds the phase timings)."""
    save = Path(tempfile.mkdtemp()) / "run"
    smol = subprocess.run([sys.executable, "-m", "mindr1.artifacts", "smollm2"], capture_output=True, text=True,
                          check=True).stdout.split(": ", 1)[1].strip()
    cmd = [sys.executable, "-m", "mindr1.cli", "grpo", "--config", "configs/rlxf/grpo_r1_zero_smollm2_cpu.yaml",
           f"actor_rollout_ref.actor_rollout.load={smol}", f"actor_rollout_ref.actor_rollout.data_path={args.data}/train",
           f"actor_rollout_ref.actor_rollout.save={save}", "training.eval_data_path=null", "training.plot=false",
           f"training.train_iters={args.steps}", "training.save_interval=0", f"training.global_batch_size={args.prompts}",
           f"actor_rollout_ref.actor_rollout.ppo_mini_batch_size={args.prompts}",
           f"actor_rollout_ref.actor_rollout.n_samples_per_prompt={args.group}",
           f"actor_rollout_ref.actor_rollout.micro_batch_size={args.prompts * args.group}",
           f"actor_rollout_ref.actor_rollout.max_response_length={args.max_new_tokens}",
           "actor_rollout_ref.actor_rollout.lr=1e-5", f"training.cpu_threads_per_worker={args.threads}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    steps = [json.loads(x) for x in open(save / "metrics.jsonl") if '"timing/step_s"' in x]
    rss = [line for line in proc.stdout.splitlines() if "peak RSS" in line]
    total = float(rss[-1].rsplit("total ", 1)[1].rstrip(")")) if rss else float("nan")
    return {"step_s": [s["timing/step_s"] for s in steps][1:], "rss_mb": total,
            "gen_tokens": [s["response_length/mean"] * args.prompts * args.group for s in steps][1:],
            "phases": {k: sum(s.get(k, 0) for s in steps[1:]) / max(len(steps) - 1, 1)
                       for k in steps[0] if k.startswith("timing/")}}


def make_data(out: str) -> None:
    """ANCHORS.md's task: chain_sum, 2-3 terms, 1-2 digits, 400 train prompts, preprocessed for mindr1."""
    smol = subprocess.run([sys.executable, "-m", "mindr1.artifacts", "smollm2"], capture_output=True, text=True,
                          check=True).stdout.split(": ", 1)[1].strip()
    subprocess.run([sys.executable, "examples/r1_zero/make_arithmetic_data.py", "--out", out, "--train", "400",
                    "--test", "64", "--terms", "2,3", "--digits", "1,2"], cwd=ROOT, check=True)
    subprocess.run([sys.executable, "tools/preprocess_data.py", "--input", f"{out}/train.jsonl", "--output-prefix",
                    f"{out}/train", "--handler-name", "R1AlpacaStyleInstructionHandler", "--prompt-type",
                    "smollm_r1_zero", "--templates-file", "configs/rlxf/templates_r1_zero.json", "--map-keys",
                    '{"prompt":"question","query":"","response":"answer","system":"","history":""}',
                    "--dataset-additional-keys", "labels", "--tokenizer-name-or-path", smol, "--no-progress-bar"],
                   cwd=ROOT, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--prompts", type=int, default=1, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None, help="dir with train.jsonl / train_* prompts (default: made here)")
    p.add_argument("--side", choices=["trl"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side == "trl":
        print("RESULT " + json.dumps(trl_side(args)))
        return
    if args.data is None:
        args.data = tempfile.mkdtemp()
        make_data(args.data)
    import trl

    ours = mindr1_side(args)
    child = subprocess.run([sys.executable, __file__, "--side", "trl", *sys.argv[1:], "--data", args.data], cwd=ROOT,
                           capture_output=True, text=True)
    line = next((x for x in child.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(child.stderr[-3000:])
    theirs = json.loads(line[7:])
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    print(f"GRPO step, SmolLM2-135M, {args.prompts} prompt(s) x {args.group}, {args.max_new_tokens} new tokens, "
          f"{args.threads} threads (trl {trl.__version__})")
    for name, r in (("mindr1", ours), ("TRL", theirs)):
        s = mean(r["step_s"])
        print(f"  {name:7s} {s:7.2f} s/step  {1 / s:6.3f} steps/s  {args.prompts / s:6.3f} prompts/s  "
              f"{mean(r['gen_tokens']) / s:6.1f} generated tokens/s  peak RSS {r['rss_mb']:.0f} MiB")
    print(f"  speed-up {mean(theirs['step_s']) / mean(ours['step_s']):.2f}x; mindr1 phases: "
          + ", ".join(f"{k[7:-2]} {v:.1f}s" for k, v in ours["phases"].items()))


if __name__ == "__main__":
    main()

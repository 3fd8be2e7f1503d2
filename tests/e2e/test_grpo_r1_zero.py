"""R1-Zero GRPO on the real SmolLM2-135M-Instruct and real reasoning-gym arithmetic: held-out reward
(greedy, held-out prompts, the same verifiers as training) is higher after a few seeded steps than
before. Tiny random models check the machinery (test_grpo.py); this checks that it learns."""
from __future__ import annotations

import subprocess
import sys

import pytest

from test_grpo import ROOT, preprocess_prompts, step_metrics

pytest.importorskip("reasoning_gym")

CONFIG = ROOT / "configs" / "rlxf" / "grpo_r1_zero_smollm2_cpu.yaml"
# Short enough for CI, sized so the rise holds for this seed: more prompts per step than the
# example (fewer zero-variance groups), short completions, a high lr for a 135M model.
SETTINGS = ("training.train_iters=6", "training.global_batch_size=8", "training.eval_samples=32",
            "training.save_interval=0", "training.plot=false",
            "actor_rollout_ref.actor_rollout.micro_batch_size=8", "actor_rollout_ref.actor_rollout.ppo_mini_batch_size=8",
            "actor_rollout_ref.actor_rollout.max_response_length=32", "actor_rollout_ref.actor_rollout.lr=3e-5")


def make_data(out, smollm2_dir) -> tuple[str, str]:
    cmd = [sys.executable, "examples/r1_zero/make_arithmetic_data.py", "--out", str(out), "--train", "400",
           "--test", "32", "--terms", "2,2", "--digits", "1,2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (preprocess_prompts(out / "train.jsonl", out / "train", smollm2_dir),
            preprocess_prompts(out / "test.jsonl", out / "test", smollm2_dir))


@pytest.mark.slow
def test_smollm2_held_out_reward_rises(tmp_path, smollm2_dir):
    train, test = make_data(tmp_path / "data", smollm2_dir)
    save = tmp_path / "run"
    cmd = [sys.executable, "-m", "mindr1.cli", "grpo", "--config", str(CONFIG),
           f"actor_rollout_ref.actor_rollout.load={smollm2_dir}", f"actor_rollout_ref.actor_rollout.data_path={train}",
           f"training.eval_data_path={test}", f"actor_rollout_ref.actor_rollout.save={save}", *SETTINGS]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    metrics = step_metrics(save)
    before, after = metrics[0], metrics[max(metrics)]
    assert after["eval/reward"] > before["eval/reward"], (before, after)

"""DAPO dynamic sampling, rollout-training mismatch correction and one-step asynchronous rollout end to end.

- Real SmolLM2-135M-Instruct on real reasoning-gym chain_sum, driven in-process (one Ray cluster, two
  steps): with dynamic sampling every kept group has reward variance and the batch is full, the rounds
  are logged; with an engine whose log-probs are shifted on some tokens, TIS truncates exactly those
  weights at C and the gap metric and its warning fire. Second step: every reward forced equal, so
  max_gen_rounds runs out: the step trains on what it has and says so; with the engine left exact,
  MIS weights are 1 and nothing is masked.
- max_staleness 1 on the tiny config (separate placement): the next batch is generated while the
  actor trains (phase timings), and a run stopped after step 1 and resumed gives the uninterrupted
  run's step 2 exactly (the prefetched batch is part of the checkpoint).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from test_grpo import ROOT, preprocess_prompts, run_grpo, step_metrics, tiny_setup  # noqa: F401 (fixture)

CONFIG = ROOT / "configs" / "rlxf" / "dapo_smollm2_cpu.yaml"
C = 2.0


@pytest.fixture(scope="module")
def chain_sum(tmp_path_factory, smollm2_dir):
    pytest.importorskip("reasoning_gym")
    out = tmp_path_factory.mktemp("chain_sum")
    cmd = [sys.executable, "examples/r1_zero/make_arithmetic_data.py", "--out", str(out), "--train", "64",
           "--test", "4", "--terms", "2,2", "--digits", "1,1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return preprocess_prompts(out / "train.jsonl", out / "train", smollm2_dir)


def _controller_class():
    from mindr1.rl.controller import GRPOController

    class Probed(GRPOController):
        """The real controller with a perturbable engine and a reward switch; keeps the trained batch."""

        perturb = True
        equal_rewards = False

        def generate(self, prompt_ids, greedy=False, round_=0):
            batch = super().generate(prompt_ids, greedy, round_)
            if self.perturb and not greedy:
                # token 0 of every response: engine 2 nats below the trainer (ratio e^2 > C: truncated);
                # token 1: 0.5 nats above (ratio e^-0.5: kept as it is)
                batch.rollout_logp_BR[:, 0] -= 2.0
                batch.rollout_logp_BR[:, 1] += 0.5 * batch.response_mask_BR[:, 1]
            return batch

        def score(self, batch, items):
            scores = super().score(batch, items)
            if self.equal_rewards:
                batch.rewards_B = torch.zeros_like(batch.rewards_B)
            return scores

        def update(self, batch):
            self.trained = batch
            return super().update(batch)

    return Probed


@pytest.mark.slow
def test_dapo_dynamic_sampling_and_rollout_correction_on_smollm2(chain_sum, smollm2_dir, capsys):
    import ray

    from mindr1.config import load_config
    from mindr1.rl.algos import varied_groups
    from mindr1.rl.config import GRPOConfig

    need, n = 2, 4
    cfg = load_config(GRPOConfig, CONFIG, [
        f"actor_rollout_ref.actor_rollout.load={smollm2_dir}", f"actor_rollout_ref.actor_rollout.data_path={chain_sum}",
        f"training.global_batch_size={need}", "training.train_iters=2", "training.plot=false",
        f"actor_rollout_ref.actor_rollout.n_samples_per_prompt={n}", "actor_rollout_ref.actor_rollout.micro_batch_size=8",
        "actor_rollout_ref.actor_rollout.ppo_mini_batch_size=2", "actor_rollout_ref.actor_rollout.max_response_length=24",
        "algorithm.overlong_buffer_length=4", "algorithm.max_gen_rounds=8",
        "algorithm.rollout_correction=tis", f"algorithm.rollout_correction_threshold={C}"])
    controller = None
    try:
        controller = _controller_class()(cfg)
        controller.sync_weights()

        # step 1: dynamic sampling fills the batch with groups that carry a signal; TIS on a perturbed engine
        m1 = controller.train_step()
        batch = controller.trained
        assert len(batch) == need * n and bool(varied_groups(batch.rewards_B, n).all())
        assert m1["dynamic_sampling/kept_groups"] == need and m1["dynamic_sampling/exhausted"] == 0.0
        assert m1["dynamic_sampling/rounds"] >= 1
        assert m1["dynamic_sampling/prompts_per_kept_group"] == m1["dynamic_sampling/prompts_drawn"] / need
        assert m1["reward/zero_std_group_frac"] == 0.0
        w_BR, mask_BR = batch.is_weights_BR, batch.response_mask_BR
        assert torch.equal(w_BR[:, 0], torch.full((len(batch),), C))         # ratio e^2 truncated at C
        ratio1 = torch.exp(batch.old_logp_BR[:, 1] - batch.rollout_logp_BR[:, 1])
        has1 = mask_BR[:, 1] > 0
        assert torch.allclose(w_BR[has1, 1], ratio1[has1]) and torch.allclose(ratio1[has1], torch.tensor(0.6065), atol=2e-3)
        rest = mask_BR.clone()
        rest[:, :2] = 0
        assert torch.allclose(w_BR[rest > 0], torch.ones(1), atol=2e-3)        # the untouched tokens: ~1
        assert (w_BR * (1 - mask_BR)).abs().sum() == 0
        # the gap metric: token 0 of every response (2 nats) is over the 1-nat threshold
        assert m1["rollout/logp_abs_diff_over_frac"] == pytest.approx(len(batch) / batch.num_response_tokens, rel=1e-5)
        assert m1["rollout/logp_abs_diff_max"] == pytest.approx(2.0, abs=2e-3)
        out = capsys.readouterr().out
        assert "warning: step 1: trainer and engine log-probs differ" in out
        controller.step += 1

        # step 2: no group has a signal, max_gen_rounds runs out; MIS against an exact engine
        controller.perturb, controller.equal_rewards = False, True
        cfg.algorithm.max_gen_rounds, cfg.algorithm.rollout_correction = 2, "mis"
        m2 = controller.train_step()
        batch = controller.trained
        assert m2["dynamic_sampling/exhausted"] == 1.0 and m2["dynamic_sampling/rounds"] == 2
        assert m2["dynamic_sampling/kept_groups"] == 0 and len(batch) == need * n
        assert "actor/loss" in m2 and m2["actor/pg_loss"] == 0.0
        out = capsys.readouterr().out
        assert "step 2: dynamic sampling found 0 of 2 groups with reward variance in 2 rounds" in out
        assert "log-probs differ" not in out and m2["rollout/logp_abs_diff_over_frac"] == 0.0
        valid = batch.response_mask_BR > 0
        assert torch.allclose(batch.is_weights_BR[valid], torch.ones(1), atol=1e-3)  # nothing masked
    finally:
        if controller is not None:
            controller.close()
        if ray.is_initialized():
            ray.shutdown()


ASYNC = ("training.train_iters=2", "training.eval_data_path=null", "training.plot=false",
         "actor_rollout_ref.actor_rollout.entropy_coeff=0.01", "algorithm.kl_ctrl.kl_coef=0",
         "resource_pool.actor_rollout=2", "actor_rollout_ref.actor_rollout.num_gpus_for_train=1",
         "actor_rollout_ref.actor_rollout.num_gpus_for_infer=1", "actor_rollout_ref.actor_rollout.max_staleness=1")


@pytest.mark.slow
def test_one_step_async_rollout_overlaps_and_resumes_exactly(tmp_path, tiny_setup):
    full = tmp_path / "full"
    run_grpo(full, tiny_setup, *ASYNC)
    metrics = step_metrics(full)
    # step 1 generated step 2's batch while it scored and trained on its own
    assert metrics[1]["timing/generate_overlap_s"] > 0
    assert metrics[1]["timing/prefetch_wall_s"] >= metrics[1]["timing/generate_overlap_s"]
    assert "timing/generate_overlap_s" not in metrics[2]  # the last step starts no prefetch

    part = tmp_path / "part"
    run_grpo(part, tiny_setup, *ASYNC, "training.exit_after_iters=1")
    resumed = run_grpo(part, tiny_setup, *ASYNC)
    assert "resuming GRPO from step 1" in resumed.stdout + resumed.stderr
    again = step_metrics(part)
    for key in ("reward/mean", "response_length/mean", "actor/loss", "actor/entropy", "actor/grad_norm",
                "actor/approx_kl", "rollout/logp_abs_diff_mean"):
        assert again[2][key] == metrics[2][key], key

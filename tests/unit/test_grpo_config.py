"""GRPO config: every YAML under configs/rlxf loads, keys are documented, bad keys and sizes are rejected
with the key and the numbers named; the batch container and the prompt order behave."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mindr1.config import ConfigError, explain, field_docs, load_config
from mindr1.rl.config import GRPOConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "rlxf").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_rlxf_config_loads(path):
    cfg = load_config(GRPOConfig, path)
    assert cfg.training.global_batch_size % cfg.actor.ppo_mini_batch_size == 0


def test_recipe_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"grpo_trainer_qwen25_7b.yaml", "grpo_trainer_qwen25_7b_reason.yaml"} <= names


def test_every_key_documented():
    lines = explain(GRPOConfig)
    assert lines and all("#  " not in line and not line.endswith("# ") for line in lines)
    assert "actor_rollout_ref.actor_rollout.ppo_mini_batch_size" in "\n".join(lines)
    assert field_docs(GRPOConfig)


def test_unknown_key_rejected():
    with pytest.raises(ConfigError, match="actor_rollout_ref.actor_rollout.*'ppo_mini_batch'"):
        load_config(GRPOConfig, overrides=["actor_rollout_ref.actor_rollout.ppo_mini_batch=4"])


@pytest.mark.parametrize("overrides, match", [
    (["training.global_batch_size=6", "actor_rollout_ref.actor_rollout.ppo_mini_batch_size=4"],
     "ppo_mini_batch_size 4 does not divide training.global_batch_size 6"),
    (["resource_pool.actor_rollout=3", "actor_rollout_ref.actor_rollout.tensor_model_parallel_size=2"],
     "actor devices 3 are not a multiple of .*tensor_model_parallel_size 2"),
    (["actor_rollout_ref.actor_rollout.num_gpus_for_train=2", "actor_rollout_ref.actor_rollout.num_gpus_for_infer=2",
      "resource_pool.actor_rollout=3"], "num_gpus_for_train 2 \\+ num_gpus_for_infer 2 != resource_pool.actor_rollout 3"),
    (["actor_rollout_ref.actor_rollout.micro_batch_size=3"], "does not split into micro_batch_size 3"),
    (["resource_pool.ref=3", "actor_rollout_ref.ref.pipeline_model_parallel_size=2"],
     "resource_pool.ref 3 is not a positive multiple"),
    (["algorithm.verifier_weight=[1.0]"], "verifier_weight has 1 entries for 2"),
    (["algorithm.verifier_function=[acc,nonsense]", "algorithm.verifier_weight=[1,1]"], "unknown verifier"),
    (["reward.gate=strict_format"], "reward.gate"),
    (["actor_rollout_ref.actor_rollout.n_samples_per_prompt=1"], "n_samples_per_prompt is 1"),
    (["actor_rollout_ref.actor_rollout.policy_loss=ppo2"], r"policy_loss: 'ppo2' is not one of \['clip', 'gspo'\]"),
    (["algorithm.adv_estimator=gae2"], "adv_estimator: 'gae2' is not one of .*'rloo'"),
    (["algorithm.rollout_correction=is"], "rollout_correction: 'is' is not one of .*'tis'"),
    (["algorithm.rollout_correction_level=batch"], "rollout_correction_level"),
    (["actor_rollout_ref.actor_rollout.loss_agg_mode=mean"], "loss_agg_mode: 'mean'"),
    (["actor_rollout_ref.actor_rollout.clip_ratio_c=0.5"], "clip_ratio_c: 0.5 is out of range; expected > 1"),
    (["algorithm.max_gen_rounds=0"], "max_gen_rounds: 0 is out of range; expected >= 1"),
    (["algorithm.overlong_buffer_length=999"], r"overlong_buffer_length: 999 must be in \[0, .*max_response_length 256\]"),
    (["actor_rollout_ref.actor_rollout.max_staleness=2"], r"max_staleness: 2 is out of range; expected in \[0, 1\]"),
    (["actor_rollout_ref.actor_rollout.max_staleness=1"], "max_staleness 1 needs separate placement"),
    (["algorithm.rollout_correction=tis", "actor_rollout_ref.actor_rollout.temperature=0.7"],
     "temperature 1, top_p 1, top_k -1 \\(got 0.7"),
    (["resource_pool.actor_rollout=2", "actor_rollout_ref.actor_rollout.num_gpus_for_train=1",
      "actor_rollout_ref.actor_rollout.num_gpus_for_infer=1", "actor_rollout_ref.actor_rollout.max_staleness=1",
      "algorithm.rollout_correction=mis"], "is for max_staleness 0"),
])
def test_inconsistent_sizes_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(GRPOConfig, overrides=overrides)


def test_allowed_names_come_from_the_registries():
    from mindr1.rl import algos

    algos.register_adv_est("my_estimator")(lambda rewards_B, group_size, eps=1e-6: (rewards_B, {}))
    try:
        assert load_config(GRPOConfig, overrides=["algorithm.adv_estimator=my_estimator"]).algorithm.adv_estimator \
            == "my_estimator"
    finally:
        del algos.ADV_ESTIMATORS["my_estimator"]
    with pytest.raises(ConfigError, match="my_estimator"):
        load_config(GRPOConfig, overrides=["algorithm.adv_estimator=my_estimator"])


def test_new_algorithm_keys_documented():
    text = "\n".join(explain(GRPOConfig))
    for key in ("clip_ratio_c", "policy_loss", "max_staleness", "dynamic_sampling", "max_gen_rounds",
                "overlong_buffer_length", "overlong_filter", "rollout_correction", "mismatch_threshold",
                "shuffle_minibatch", "clip_ratio_low"):
        assert key in text, key


def test_separate_placement_sizes():
    cfg = load_config(GRPOConfig, overrides=["resource_pool.actor_rollout=3",
                                             "actor_rollout_ref.actor_rollout.num_gpus_for_train=2",
                                             "actor_rollout_ref.actor_rollout.num_gpus_for_infer=1",
                                             "actor_rollout_ref.actor_rollout.micro_batch_size=4"])
    assert not cfg.colocated and cfg.actor_devices == 2 and cfg.num_engines == 1 and cfg.actor_dp() == 2


def _completion(tokens, finished=True):
    from mindr1.rollout.base import Completion

    return Completion(list(tokens), [-0.5] * len(tokens), "stop" if finished else "length")


def test_batch_layout_and_positions():
    from mindr1.rl.batch import RolloutBatch, gather_response_BR

    batch = RolloutBatch.from_completions([[5, 6, 7], [8]], [[_completion([1, 2]), _completion([3], False)],
                                                             [_completion([4, 4, 4]), _completion([9])]], pad_id=0)
    assert batch.tokens_BS.tolist() == [[5, 6, 7, 1, 2], [5, 6, 7, 3, 0], [8, 4, 4, 4, 0], [8, 9, 0, 0, 0]]
    assert batch.response_mask_BR.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]]
    assert batch.finished_B.tolist() == [True, False, True, True] and batch.group_size == 2
    mb = batch.micro_batches(2)[1]
    # the label at position p is token p+1: gathering labels at the response positions gives the response
    picked = gather_response_BR(mb["labels"], mb["positions_BR"]) * mb["response_mask_BR"].long()
    assert picked.tolist() == [[4, 4, 4], [9, 0, 0]]
    trimmed = batch.select(torch.tensor([1, 3])).trimmed()
    assert trimmed.tokens_BS.shape == (2, 4) and trimmed.response_mask_BR.shape == (2, 1)
    assert [len(c) for c in batch.chunks(2)] == [2, 2]


def test_batch_concat_pads_to_the_widest():
    from mindr1.rl.batch import RolloutBatch

    a = RolloutBatch.from_completions([[5, 6]], [[_completion([1]), _completion([2])]], pad_id=0)
    b = RolloutBatch.from_completions([[7]], [[_completion([3, 4, 4]), _completion([9], False)]], pad_id=0)
    a.rewards_B, b.rewards_B = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    both = RolloutBatch.concat([a, b], pad_id=0)
    assert both.tokens_BS.tolist() == [[5, 6, 1, 0], [5, 6, 2, 0], [7, 3, 4, 4], [7, 9, 0, 0]]
    assert both.response_mask_BR.tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]]
    assert both.rollout_logp_BR.tolist() == [[-0.5, 0, 0], [-0.5, 0, 0], [-0.5] * 3, [-0.5, 0, 0]]
    assert both.rewards_B.tolist() == [1.0, 0.0, 0.5, 0.5] and both.finished_B.tolist() == [True, True, True, False]
    assert both.num_loss_tokens == 6
    both.loss_mask_B = both.finished_B.float()
    assert both.num_loss_tokens == 5 and both.num_loss_sequences == 3
    with pytest.raises(ValueError, match="only some"):
        RolloutBatch.concat([a, RolloutBatch.from_completions([[7]], [[_completion([3]), _completion([9])]], 0)], 0)


def test_prompt_source_resumes_exactly():
    from mindr1.rl.prompts import PromptSource

    a = PromptSource(10, 4, seed=3)
    first = [a.next_indices() for _ in range(2)]
    state = a.state_dict()
    rest = [a.next_indices() for _ in range(3)]
    b = PromptSource(10, 4, seed=3)
    b.load_state_dict(state)
    assert [b.next_indices() for _ in range(3)] == rest
    seen = sorted(i for batch in first for i in batch) + sorted(rest[0][:2])
    assert len(set(first[0] + first[1] + rest[0][:2])) == 10 == len(seen)


def test_number_verifier():
    from mindr1.rl.rewards import compute_rewards

    import mindr1.rl.task_rewards  # noqa: F401

    rewards, scores = compute_rewards(["number", "format"], [1.0, 0.5], ["p<think>\n"] * 3,
                                      ["so 12</think>\n<answer>12</answer>", "5+7 is 13", "</think><answer>12</answer>"],
                                      gate="number", labels=["12", "12", "11"])
    assert scores["number"] == [1.0, 0.0, 0.0]
    assert rewards == [1.5, 0.0, 0.0]  # format pays only with a right answer

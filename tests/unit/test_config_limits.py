"""Configs are bounded and checked before anything starts (issue 18).

YAML anchors/aliases and runaway ``${...}`` interpolation are refused before they expand; a
``defaults:`` cycle is named; every numeric field of every config declares a range (one mechanism:
``ranged`` metadata checked by ``build``), and each nonsense value is refused with its key, value
and range before Ray or torchrun starts. The same holds for an HF config.json.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from mindr1.config import ConfigError, explain, load_config, load_yaml_tree
from mindr1.models.arch import ModelArch
from mindr1.rl import controller
from mindr1.rl.config import GRPOConfig
from mindr1.training import sft
from mindr1.training.config import SFTConfig

ROOT = Path(__file__).resolve().parents[2]
TINY_GRPO = ROOT / "configs" / "rlxf" / "grpo_tiny_cpu.yaml"


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(30)  # unbounded expansion of 10**9 nodes would hang here; refusing takes milliseconds
def test_nine_level_alias_file_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("training:\n  seed: 1\n" + _alias_bomb(9))
    with pytest.raises(ConfigError, match=r"bomb.yaml: line 3: YAML anchors and aliases"):
        load_config(GRPOConfig, path)
    with pytest.raises(ConfigError, match="override training.seed: .*anchors and aliases"):
        load_config(GRPOConfig, overrides=["training.seed=[&a 1, *a]"])


@pytest.mark.timeout(30)
def test_runaway_interpolation_is_refused(tmp_path):
    lines = ["a0: xxxxxxxxxx"] + [f"a{i}: '{''.join(['${a%d}' % (i - 1)] * 10)}'" for i in range(1, 10)]
    path = tmp_path / "interp.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="interpolation expands to more than"):
        load_config(GRPOConfig, path)
    (tmp_path / "loop.yaml").write_text("training:\n  tensorboard_dir: ${training.wandb_project}\n"
                                        "  wandb_project: ${training.tensorboard_dir}\n")
    with pytest.raises(ConfigError, match="interpolation cycle"):
        load_config(GRPOConfig, tmp_path / "loop.yaml")
    (tmp_path / "ok.yaml").write_text("training:\n  wandb_project: run\n  tensorboard_dir: /tb/${training.wandb_project}\n")
    assert load_config(GRPOConfig, tmp_path / "ok.yaml").training.tensorboard_dir == "/tb/run"


def test_defaults_cycle_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults:\n  - b.yaml\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("defaults:\n  - a.yaml\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"defaults cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_yaml_tree(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("defaults:\n  - self.yaml\n")
    with pytest.raises(ConfigError, match=r"defaults cycle: .*self.yaml -> .*self.yaml"):
        load_yaml_tree(tmp_path / "self.yaml")


def _numeric_fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(tp) or (tp,)
        flat = {a for arg in args for a in (typing.get_args(arg) or (arg,))}
        if flat & {int, float}:
            yield f"{prefix}{f.name}", f


@pytest.mark.parametrize("cls", [SFTConfig, GRPOConfig, ModelArch])
def test_every_numeric_field_declares_a_range_its_default_fits(cls):
    """New fields (any branch) must declare a range: ``x: int = ranged(1, ge=1)``."""
    missing = [key for key, f in _numeric_fields(cls) if "range" not in f.metadata]
    assert missing == [], f"numeric config fields without a declared range: {missing}"
    for key, f in _numeric_fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is not dataclasses.MISSING:
            f.metadata["range"].check(default, key)
    assert any("[>= 1]" in line for line in explain(cls)), "explain does not show the ranges"


AR = "actor_rollout_ref.actor_rollout"
GRPO_NONSENSE = [
    ("training.log_interval=0", "training.log_interval: 0 is out of range; expected >= 1"),
    (f"{AR}.tensor_model_parallel_size=0", f"{AR}.tensor_model_parallel_size: 0 is out of range; expected >= 1"),
    (f"{AR}.tensor_model_parallel_size=-1", f"{AR}.tensor_model_parallel_size: -1 is out of range"),
    (f"{AR}.pipeline_model_parallel_size=0", f"{AR}.pipeline_model_parallel_size: 0 is out of range"),
    ("actor_rollout_ref.ref.micro_batch_size=0", "actor_rollout_ref.ref.micro_batch_size: 0 is out of range"),
    ("actor_rollout_ref.ref.tensor_model_parallel_size=0", "actor_rollout_ref.ref.tensor_model_parallel_size: 0"),
    (f"{AR}.micro_batch_size=0", f"{AR}.micro_batch_size: 0 is out of range"),
    ("training.worker_timeout_s=0", "training.worker_timeout_s: 0.0 is out of range; expected > 0"),
    ("training.worker_timeout_s=-5", "training.worker_timeout_s: -5.0 is out of range; expected > 0"),
    (f"{AR}.temperature=-0.5", f"{AR}.temperature: -0.5 is out of range; expected >= 0"),
    (f"{AR}.top_p=1.5", f"{AR}.top_p: 1.5 is out of range; expected in (0, 1]"),
    (f"{AR}.top_p=0", f"{AR}.top_p: 0.0 is out of range; expected in (0, 1]"),
    (f"{AR}.top_k=0", f"{AR}.top_k: 0 is out of range; expected >= 1 or -1"),
    (f"{AR}.max_response_length=-1", f"{AR}.max_response_length: -1 is out of range; expected >= 1"),
    (f"{AR}.max_prompt_length=-8", f"{AR}.max_prompt_length: -8 is out of range"),
    (f"{AR}.lr=-1e-5", f"{AR}.lr: -1e-05 is out of range; expected >= 0"),
    (f"{AR}.lr=nan", f"{AR}.lr: expected a finite number, got 'nan'"),
    ("algorithm.verifier_weight=[.nan,0.5]", "algorithm.verifier_weight[0]: expected a finite number"),
    ("algorithm.verifier_weight=[.inf,0.5]", "algorithm.verifier_weight[0]: expected a finite number"),
    ("algorithm.kl_ctrl.kl_coef=-0.1", "algorithm.kl_ctrl.kl_coef: -0.1 is out of range"),
    ("training.save_interval=-1", "training.save_interval: -1 is out of range; expected >= 0"),
    ("training.keep_last_n=0", "training.keep_last_n: 0 is out of range; expected >= 1"),
    ("resource_pool.reward=0", "resource_pool.reward: 0 is out of range"),
]


@pytest.mark.parametrize("override,message", GRPO_NONSENSE, ids=[o for o, _ in GRPO_NONSENSE])
def test_grpo_nonsense_is_refused_before_ray_starts(override, message, capsys, monkeypatch):
    monkeypatch.setattr(controller, "run", lambda cfg: pytest.fail("the run (and Ray) started"))
    assert controller.main(["--config", str(TINY_GRPO), override]) == 2
    err = capsys.readouterr().err
    assert message in err, err


SFT_NONSENSE = [
    ("log_interval=0", "log_interval: 0 is out of range; expected >= 1"),
    ("micro_batch_size=0", "micro_batch_size: 0 is out of range"),
    ("tensor_model_parallel_size=0", "tensor_model_parallel_size: 0 is out of range"),
    ("pipeline_model_parallel_size=-1", "pipeline_model_parallel_size: -1 is out of range"),
    ("lr=-1", "lr: -1.0 is out of range; expected >= 0"),
    ("save_interval=-1", "save_interval: -1 is out of range; expected >= 0"),
    ("distributed_timeout_s=0", "distributed_timeout_s: 0 is out of range; expected > 0"),
    ("seq_length=0", "seq_length: 0 is out of range"),
    ("adam_beta2=1.5", "adam_beta2: 1.5 is out of range; expected in [0, 1)"),
    ("clip_grad=inf", "clip_grad: expected a finite number, got 'inf'"),
]


@pytest.mark.parametrize("override,message", SFT_NONSENSE, ids=[o for o, _ in SFT_NONSENSE])
def test_sft_nonsense_is_refused_before_torchrun(override, message, capsys, monkeypatch):
    monkeypatch.setattr(sft, "_relaunch_ranks", lambda *a: pytest.fail("torchrun started"))
    monkeypatch.setattr(sft, "SFTTrainer", lambda *a: pytest.fail("training started"))
    assert sft.main([override]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def _hf_config(**changes) -> dict:
    cfg = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256}
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize("changes,message", [
    ({"num_attention_heads": 0}, "num_attention_heads: 0 is out of range; expected >= 1"),
    ({"num_key_value_heads": 0}, "num_key_value_heads: 0 is out of range"),
    ({"hidden_size": "64"}, "hidden_size: expected an integer, got '64' (str)"),
    ({"num_hidden_layers": 2.5}, "num_hidden_layers: expected an integer, got 2.5 (float)"),
    ({"num_hidden_layers": 2.0}, "num_hidden_layers: expected an integer, got 2.0 (float)"),
    ({"vocab_size": -1}, "vocab_size: -1 is out of range"),
    ({"head_dim": 0}, "head_dim: 0 is out of range"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps: nan is out of range; expected > 0"),
    ({"intermediate_size": True}, "intermediate_size: expected an integer, got True (bool)"),
])
def test_config_json_nonsense_is_refused(tmp_path, changes, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_hf_config(**changes)))
    with pytest.raises(ConfigError) as exc:
        ModelArch.from_hf_config(tmp_path)
    assert str(exc.value) == f"{path}: {message}" or message in str(exc.value), str(exc.value)
    assert str(path) in str(exc.value)
    assert ModelArch.from_hf_config(_hf_config()).kv_channels == 16

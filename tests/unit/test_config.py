"""The config system: defaults lists, overrides, unknown keys and types named."""
from dataclasses import dataclass, field

import pytest

from mindr1.config import ConfigError, explain, field_docs, load_config
from mindr1.models.arch import ModelArch


@dataclass
class Optim:
    lr: float = 1e-5
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """Adam betas."""


@dataclass
class Job:
    name: str = "job"
    """Run name."""
    steps: int = 10
    """Number of steps."""
    optim: Optim = field(default_factory=Optim)
    """Optimizer settings."""
    model: ModelArch = field(default_factory=ModelArch)
    """The model."""


def test_defaults_list_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nsteps: 3\n")
    cfg_file = tmp_path / "job.yaml"
    cfg_file.write_text("defaults:\n  - base.yaml\n  - model: tiny-qwen2\noptim:\n  lr: 2.0e-5\n")
    cfg = load_config(Job, cfg_file, ["steps=7", "optim.betas=[0.9,0.99]", "model.num_layers=2"])
    assert cfg.name == "base" and cfg.steps == 7
    assert cfg.optim.lr == 2e-5 and cfg.optim.betas == [0.9, 0.99]
    assert cfg.model.family == "qwen2" and cfg.model.num_layers == 2 and cfg.model.add_qkv_bias


def test_unknown_key_is_named_with_its_path(tmp_path):
    cfg_file = tmp_path / "job.yaml"
    cfg_file.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"job.yaml: unknown config key optim.'lrr'"):
        load_config(Job, cfg_file)
    with pytest.raises(ConfigError, match=r"unknown config key 'stepz'"):
        load_config(Job, None, ["stepz=3"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"steps: expected an integer, got 'many'"):
        load_config(Job, None, ["steps=many"])
    with pytest.raises(ConfigError, match=r"model.family"):
        load_config(Job, None, ["model.family=gpt2"])


def test_interpolation():
    cfg = load_config(Job, None, ["name=run", "optim.lr=${steps}", "steps=4"])
    assert cfg.optim.lr == 4.0


def test_every_field_is_documented():
    for cls in (Job, Optim, ModelArch):
        docs = field_docs(cls)
        missing = [f for f in cls.__dataclass_fields__ if f not in docs]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    lines = explain(Job)
    assert any(line.startswith("optim.lr: float = 1e-05  # Peak learning rate.") for line in lines)

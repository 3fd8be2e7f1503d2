"""SFT config: recipe names, MindSpeed-style flags, sizes checked with the numbers named."""
import pytest

from mindr1.config import ConfigError, field_docs, load_config
from mindr1.training.config import SFTConfig, flags_to_overrides


def test_mindspeed_flags_become_overrides():
    path, overrides = flags_to_overrides(["--config", "x.yaml", "--micro-batch-size", "2", "--finetune",
                                          "--use-mcore-models", "--lr=1e-5", "seed=3", "--prompt-type", "qwen_r1"])
    assert path == "x.yaml"
    assert overrides == ["micro_batch_size=2", "finetune=true", "lr=1e-5", "seed=3"]
    cfg = load_config(SFTConfig, None, overrides)
    assert cfg.micro_batch_size == 2 and cfg.finetune and cfg.lr == 1e-5


def test_unknown_flag_is_rejected_by_name():
    _, overrides = flags_to_overrides(["--micro-batch-sise", "2"])
    with pytest.raises(ConfigError, match="micro_batch_sise"):
        load_config(SFTConfig, None, overrides)


def test_batch_sizes_checked_against_world():
    cfg = load_config(SFTConfig, None, ["global_batch_size=6", "micro_batch_size=2",
                                        "tensor_model_parallel_size=2"])
    with pytest.raises(ConfigError, match=r"global_batch_size 6 is not divisible by micro_batch_size 2 x DP 4"):
        cfg.check_world(8)
    with pytest.raises(ConfigError, match=r"world size 3 is not divisible by TP\*PP = 2"):
        cfg.check_world(3)
    assert cfg.check_world(6) == 3


def test_every_field_documented_and_recipe_files_load():
    docs = field_docs(SFTConfig)
    assert not [f for f in SFTConfig.__dataclass_fields__ if f not in docs]
    for name in ("smollm2_cpu", "qwen25_7b"):
        cfg = load_config(SFTConfig, f"configs/sft/{name}.yaml")
        assert cfg.finetune
    assert load_config(SFTConfig, "configs/sft/qwen25_7b.yaml").warmup_iters == 20

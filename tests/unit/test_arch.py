"""Model families from HF config.json and YAML, and back."""
import json

import pytest

from mindr1.config import ConfigError
from mindr1.models.arch import ModelArch, load_arch


def test_yaml_and_padded_vocab():
    arch = load_arch("smollm2-135m")
    assert (arch.family, arch.num_attention_heads, arch.num_query_groups, arch.kv_channels) == ("llama", 9, 3, 64)
    assert arch.padded_vocab(1) == 49152 and arch.padded_vocab(3) == 49152
    assert load_arch("qwen25-7b").padded_vocab(2) == 152064
    assert 134_000_000 < arch.num_params() < 135_000_000


def test_hf_round_trip_qwen2(tmp_path):
    hf = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
          "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
          "rope_theta": 1e6, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "sliding_window": None}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    arch = ModelArch.from_hf_config(tmp_path)
    assert arch.family == "qwen2" and arch.add_qkv_bias and arch.rope_theta == 1e6
    out = arch.to_hf_config()
    for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "rope_theta", "tie_word_embeddings", "sliding_window"):
        assert out[key] == hf[key], key


def test_unknown_family_and_missing_fields(tmp_path):
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not a supported family"):
        ModelArch.from_hf_config({"model_type": "gpt2"})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ConfigError, match=r"config.json: missing required field\(s\)"):
        ModelArch.from_hf_config(tmp_path)

"""HF <-> megatron-core adapter: key contract against a real GPTModel, round trips, packing layout."""
from __future__ import annotations

import pytest
import torch

from mindr1.config import ConfigError
from mindr1.models import adapter as A
from mindr1.models.arch import ModelArch


def _random_hf(arch: ModelArch, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen).to(dtype) for k, s in A.hf_expected_shapes(arch).items()}


def _to_mcore(arch, hf, tp, pp):
    """{(tp_rank, pp_rank): state dict} for every rank."""
    return {(t, p): A.mcore_rank_state_dict_from_hf(arch, hf.__getitem__, t, tp, p, pp)
            for t in range(tp) for p in range(pp)}


def _to_hf(arch, ranks, tp, pp):
    out = {}
    for p in range(pp):
        for name, tensor in A.hf_tensors_from_mcore(arch, [ranks[(t, p)] for t in range(tp)], p, pp):
            assert name not in out, f"{name} yielded twice"
            out[name] = tensor
    return out


def _assert_bit_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-llama"])
@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_round_trip_bit_identical(name, tp, pp):
    arch = ModelArch.from_yaml(name)
    hf = _random_hf(arch, dtype=torch.bfloat16)
    ranks = _to_mcore(arch, hf, tp, pp)
    for (t, p), sd in ranks.items():
        assert {k: tuple(v.shape) for k, v in sd.items()} == A.mcore_expected_shapes(arch, tp, p, pp)
        for v in sd.values():  # every shard owns exactly its bytes, so torch.save writes only them
            assert v.untyped_storage().nbytes() == v.numel() * v.element_size()
    if arch.tie_word_embeddings:
        assert A.HF_LM_HEAD not in hf
        if pp > 1:
            assert torch.equal(ranks[(0, pp - 1)][A.MC_OUTPUT], ranks[(0, 0)][A.MC_EMBED])
    padded = torch.cat([ranks[(t, 0)][A.MC_EMBED] for t in range(tp)])
    assert padded.shape[0] == arch.padded_vocab(tp) > arch.vocab_size
    assert not padded[arch.vocab_size:].any(), "padded vocabulary rows must be zero"
    _assert_bit_identical(_to_hf(arch, ranks, tp, pp), hf)


def test_uneven_pipeline_and_dtype_cast():
    arch = ModelArch.from_yaml("tiny-qwen2")
    hf = _random_hf(arch)
    sd = A.mcore_rank_state_dict_from_hf(arch, hf.__getitem__, 0, 1, 1, 2, num_layer_list=[1, 3], dtype=torch.bfloat16)
    assert {k.split(".")[2] for k in sd if k.startswith("decoder.layers.")} == {"0", "1", "2"}
    assert torch.equal(sd["decoder.layers.0.input_layernorm.weight"],
                       hf["model.layers.1.input_layernorm.weight"].to(torch.bfloat16))
    assert all(v.dtype == torch.bfloat16 for v in sd.values())


def test_qkv_packing_matches_megatron_layout():
    """4 query heads, 2 KV groups, head dim 1: Megatron stores per group [q heads; k; v]."""
    arch = ModelArch(hidden_size=4, num_attention_heads=4, num_query_groups=2, kv_channels=1, ffn_hidden_size=4)
    q = torch.tensor([[0.], [1.], [2.], [3.]])
    k = torch.tensor([[10.], [11.]])
    v = torch.tensor([[20.], [21.]])
    assert A.pack_qkv(arch, q, k, v, 0, 1).flatten().tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    assert A.pack_qkv(arch, q, k, v, 0, 2).flatten().tolist() == [0, 1, 10, 20]
    assert A.pack_qkv(arch, q, k, v, 1, 2).flatten().tolist() == [2, 3, 11, 21]
    qb, kb, vb = A.unpack_qkv(arch, [A.pack_qkv(arch, q, k, v, r, 2) for r in range(2)])
    assert torch.equal(qb, q) and torch.equal(kb, k) and torch.equal(vb, v)
    gate, up = torch.arange(4.).unsqueeze(1), torch.arange(10., 14.).unsqueeze(1)
    assert A.stack_gate_up(gate, up, 0, 2).flatten().tolist() == [0, 1, 10, 11]
    assert A.stack_gate_up(gate, up, 1, 2).flatten().tolist() == [2, 3, 12, 13]


def test_topology_errors_name_the_numbers():
    with pytest.raises(ConfigError, match="PP=3 does not divide num_layers=4"):
        A.pp_layer_ranges(4, 3)
    with pytest.raises(ConfigError, match=r"sums to 5 but the model has 4"):
        A.pp_layer_ranges(4, 2, [2, 3])
    assert A.pp_layer_ranges(7, 2, [3, 4]) == [range(0, 3), range(3, 7)]
    with pytest.raises(ConfigError, match=r"TP=4 does not divide num_query_groups \(KV heads\)=2"):
        A.check_tp(ModelArch.from_yaml("tiny-qwen2"), 4)


def test_shape_check_names_the_key():
    arch = ModelArch.from_yaml("tiny-qwen2")
    shapes = A.hf_expected_shapes(arch)
    shapes["model.layers.1.mlp.up_proj.weight"] = (100, 64)
    with pytest.raises(A.AdapterError, match=r"model.layers.1.mlp.up_proj.weight has shape \(100, 64\).*\(128, 64\)"):
        A.check_hf_shapes(arch, shapes)


# ----------------------------------------------------------------------------- real GPTModel

def _gpt_model(arch: ModelArch):
    import torch.nn.functional as F
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig
    cfg = TransformerConfig(num_layers=arch.num_layers, hidden_size=arch.hidden_size,
                            ffn_hidden_size=arch.ffn_hidden_size, num_attention_heads=arch.num_attention_heads,
                            num_query_groups=arch.num_query_groups, kv_channels=arch.kv_channels,
                            use_cpu_initialization=True, normalization="RMSNorm", layernorm_epsilon=arch.rms_norm_eps,
                            gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False,
                            add_qkv_bias=arch.add_qkv_bias, hidden_dropout=0.0, attention_dropout=0.0)
    return GPTModel(cfg, get_gpt_layer_local_spec(), vocab_size=arch.padded_vocab(1),
                    max_sequence_length=arch.max_position_embeddings, position_embedding_type="rope",
                    rotary_base=int(arch.rope_theta),
                    share_embeddings_and_output_weights=arch.tie_word_embeddings)


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-llama"])
def test_key_contract_with_real_gpt_model(mcore_single_process, name):
    arch = ModelArch.from_yaml(name).replace(num_layers=2)
    model = _gpt_model(arch)
    real = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    assert real == A.mcore_expected_shapes(arch, 1)
    sd = A.mcore_rank_state_dict_from_hf(arch, _random_hf(arch).__getitem__, 0, 1, 0, 1)
    result = model.load_state_dict(sd, strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith("_extra_state") for k in result.missing_keys)


def test_megatron_logits_match_hf(mcore_single_process):
    """The packing is the one Megatron's attention and MLP read: same logits as HF Qwen2."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    arch = ModelArch.from_yaml("tiny-qwen2").replace(num_layers=2)
    hf = _random_hf(arch, seed=3)
    for k in hf:  # small weights keep the comparison well conditioned
        hf[k] = hf[k] * (0.1 if hf[k].dim() > 1 else 1.0) + (1.0 if k.endswith("norm.weight") else 0.0)
    hf_model = Qwen2ForCausalLM(Qwen2Config(**arch.to_hf_config())).eval()
    hf_model.load_state_dict(hf, strict=True)
    model = _gpt_model(arch).eval()
    model.load_state_dict(A.mcore_rank_state_dict_from_hf(arch, hf.__getitem__, 0, 1, 0, 1), strict=False)
    ids = torch.tensor([[1, 5, 9, 200, 42, 7]])
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    with torch.no_grad():
        ref = hf_model(ids).logits
        out = model(ids, pos, attention_mask=None)[..., : arch.vocab_size]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_open_hf_checkpoint_sharded_and_bin(tmp_path):
    from mindr1.checkpoint.hf_io import write_hf_safetensors
    arch = ModelArch.from_yaml("tiny-qwen2")
    hf = _random_hf(arch, dtype=torch.bfloat16)
    (tmp_path / "st").mkdir()
    weight_map = write_hf_safetensors(tmp_path / "st", hf.items(), max_shard_bytes=100_000)
    assert len(set(weight_map.values())) > 1 and (tmp_path / "st" / "model.safetensors.index.json").exists()
    (tmp_path / "bin").mkdir()
    torch.save(hf, tmp_path / "bin" / "pytorch_model.bin")
    for sub in ("st", "bin"):
        get_hf, names = A.open_hf_checkpoint(tmp_path / sub)
        assert sorted(names) == sorted(hf)
        assert get_hf.shapes() == {k: tuple(v.shape) for k, v in hf.items()}
        sd = A.mcore_rank_state_dict_from_hf(arch, get_hf, 1, 2, 1, 2)
        ref = A.mcore_rank_state_dict_from_hf(arch, hf.__getitem__, 1, 2, 1, 2)
        _assert_bit_identical(sd, ref)

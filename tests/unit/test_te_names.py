"""The model boundary owns names: a transformer-engine-spec model's tensors cross it under the local names.

megatron-core 0.16.1's TE layer spec (``get_gpt_layer_with_transformer_engine_spec``) fuses the
RMSNorms into the following linears (TELayerNormColumnParallelLinear: ``linear_qkv.layer_norm_weight``,
``linear_fc1.layer_norm_weight``) and leaves ``input_layernorm`` / ``pre_mlp_layernorm`` as
IdentityOp. megatron-core states the correspondence itself: its local spec
(``get_gpt_layer_local_spec``) carries ``sharded_state_dict_keys_map = {"input_layernorm.":
"self_attention.linear_qkv.layer_norm_", "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_"}``, the
map its distributed checkpointing uses to read a local model as a TE one. The TE names here are
derived from that map, so no transformer-engine install is needed. A "TE-named" model is the local
model with its norm weights moved where TE keeps them: its state dict has exactly the TE spec's keys.
"""
from __future__ import annotations

import pytest
import torch

from mindr1.models import adapter as A
from mindr1.models.arch import ModelArch


def _megatron_te_map() -> dict[str, str]:
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return dict(get_gpt_layer_local_spec(normalization="RMSNorm").submodules.sharded_state_dict_keys_map)


def _te_name(key: str, mapping: dict[str, str]) -> str:
    """megatron's own rule: inside a layer, the local prefix is replaced by the TE one."""
    if not key.startswith("decoder.layers."):
        return key
    layer, _, rest = key[len("decoder.layers."):].partition(".")
    for local, te in mapping.items():
        if rest.startswith(local):
            return f"decoder.layers.{layer}.{te}{rest[len(local):]}"
    return key


def _local_model(arch: ModelArch):
    from mindr1.models.megatron import build_model
    from mindr1.parallel.topology import Topology

    torch.manual_seed(0)
    return build_model(arch, Topology(world_size=1, tp=1, pp=1))


def _te_named(model):
    """The local model with its norms where TE's spec keeps them (same tensors, TE's names)."""
    from megatron.core.transformer.identity_op import IdentityOp

    for layer in model.decoder.layers:
        qkv_norm, mlp_norm = layer.input_layernorm.weight, layer.pre_mlp_layernorm.weight
        layer.input_layernorm, layer.pre_mlp_layernorm = IdentityOp(), IdentityOp()
        layer.self_attention.linear_qkv.register_parameter("layer_norm_weight", qkv_norm)
        layer.mlp.linear_fc1.register_parameter("layer_norm_weight", mlp_norm)
    return model


ARCHS = [pytest.param(dict(family="qwen2", add_qkv_bias=True, tie_word_embeddings=False), id="qwen2-bias-untied"),
         pytest.param(dict(family="llama", add_qkv_bias=False, tie_word_embeddings=True), id="llama-tied")]


def _arch(kw) -> ModelArch:
    return ModelArch(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2,
                     vocab_size=100, make_vocab_size_divisible_by=16, **kw)


def test_our_te_map_is_megatrons():
    mapping = _megatron_te_map()
    assert mapping == {"input_layernorm.": "self_attention.linear_qkv.layer_norm_",
                       "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_"}
    ours = {te: local for te, local in A.TE_FUSED_NORMS.items()}
    assert {_te_name("decoder.layers.0." + local, mapping)[len("decoder.layers.0."):]: local
            for local in ours.values()} == ours


@pytest.mark.parametrize("kw", ARCHS)
def test_te_names_round_trip_every_parameter(mcore_single_process, kw):
    from mindr1.models.megatron import local_state_dict

    model = _local_model(_arch(kw))
    local = local_state_dict(model)
    te = A.to_te_names(local)
    mapping = _megatron_te_map()
    assert sorted(te) == sorted(_te_name(k, mapping) for k in local)
    assert sum(k.endswith("layer_norm_weight") for k in te) == 2 * 2  # two fused norms a layer
    back = A.from_te_names(te)
    assert list(back) == list(local) and all(back[k] is local[k] for k in local)
    te_model = _te_named(_local_model(_arch(kw)))
    raw = {k for k in te_model.state_dict() if not k.endswith("_extra_state")}
    assert raw == set(te)  # the TE-named model really has the TE spec's keys


@pytest.mark.parametrize("kw", ARCHS)
def test_load_save_and_sync_through_te_names_equal_local(mcore_single_process, kw):
    from mindr1.models.megatron import load_state_dict, local_state_dict, named_tensors
    from mindr1.rollout.weight_sync import sync_weights

    arch = _arch(kw)
    local_model = _local_model(arch)
    with torch.no_grad():
        for p in local_model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # norms away from 1, so a swapped tensor would show
    state = local_state_dict(local_model)
    te_model = _te_named(_local_model(arch))
    load_state_dict(te_model, state)  # a checkpoint (local names) into a TE-named model
    saved = local_state_dict(te_model)  # what a checkpoint save of it writes
    assert sorted(saved) == sorted(state)
    assert all(torch.equal(saved[k], state[k]) for k in state)
    assert all(hasattr(v, "tensor_model_parallel") == hasattr(named_tensors(local_model)[k], "tensor_model_parallel")
               for k, v in named_tensors(te_model).items())

    class Collect:
        def __init__(self):
            self.items = []

        def update_weights(self, weights):
            self.items += [(n, t.clone()) for n, t in weights]
            return len(self.items)

    streams = []
    for model in (local_model, te_model):
        engine = Collect()
        sync_weights(model, arch, engine, bucket_size_mb=1)
        streams.append(engine.items)
    assert [n for n, _ in streams[0]] == [n for n, _ in streams[1]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(*streams))
    assert any("input_layernorm" in n for n, _ in streams[1])

"""Build a megatron-core GPTModel for one pipeline stage of a :class:`ModelArch`, and load HF weights.

The model description (ModelArch) stays plain; parallelism is applied here, from outside: the
TransformerConfig carries TP/PP sizes, the layer spec is the local one (transformer-engine's when
it imports on a GPU), and each rank builds only its own stage. Must be called inside a
:class:`mindr1.parallel.state.ParallelContext`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from mindr1.accelerator import get_accelerator
from mindr1.models.arch import ModelArch
from mindr1.parallel.topology import Topology


def _use_transformer_engine() -> bool:
    if not get_accelerator().is_cuda:
        return False
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def transformer_config(arch: ModelArch, topology: Topology, dtype: Optional[torch.dtype] = None, **overrides):
    """The megatron TransformerConfig of ``arch`` split by ``topology`` (fp32 on CPU, bf16 elsewhere)."""
    from megatron.core.transformer import TransformerConfig

    acc = get_accelerator()
    dtype = dtype or acc.default_dtype()
    kwargs = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        kv_channels=arch.kv_channels,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.add_qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=topology.tp,
        pipeline_model_parallel_size=topology.pp,
        virtual_pipeline_model_parallel_size=topology.vpp,
        pipeline_dtype=dtype,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=acc.is_cpu,
        perform_initialization=True,
        variable_seq_lengths=True,
        moe_token_dispatcher_type="alltoall",  # unused (dense model); "allgather" rejects variable_seq_lengths
        calculate_per_token_loss=True,
        deallocate_pipeline_outputs=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        init_method_std=0.02,
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


def layer_spec(arch: ModelArch):
    if _use_transformer_engine():
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=False)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return get_gpt_layer_local_spec(qk_layernorm=False, normalization="RMSNorm")


def build_model(arch: ModelArch, topology: Topology, dtype: Optional[torch.dtype] = None,
                num_layer_list: Optional[list[int]] = None, **config_overrides):
    """This rank's GPTModel stage (on the accelerator's device), checked against the topology first."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel

    topology.check_arch(arch, num_layer_list)
    if num_layer_list is not None and len(set(num_layer_list)) > 1:
        first, last = num_layer_list[0], num_layer_list[-1]
        middle = set(num_layer_list[1:-1])
        if len(middle) > 1 or (middle and (arch.num_layers - first - last) % max(len(num_layer_list) - 2, 1)):
            raise ValueError(f"megatron-core supports uneven stages only at the first and last stage; "
                             f"got num_layer_list {num_layer_list}")
        config_overrides.setdefault("num_layers_in_first_pipeline_stage", first)
        config_overrides.setdefault("num_layers_in_last_pipeline_stage", last)
    config = transformer_config(arch, topology, dtype, **config_overrides)
    rope_kwargs = {}
    scaling = arch.rope_scaling or {}
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        rope_kwargs = {"rope_scaling": True, "rope_scaling_factor": float(scaling.get("factor", 8.0))}
    model = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(arch),
        vocab_size=arch.padded_vocab(topology.tp),
        max_sequence_length=arch.max_position_embeddings,
        pre_process=ps.is_pipeline_first_stage(),
        post_process=ps.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=arch.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=int(arch.rope_theta) if float(arch.rope_theta).is_integer() else arch.rope_theta,
        **rope_kwargs,
    )
    acc = get_accelerator()
    if not acc.is_cpu:
        model = model.to(acc.device())
    return model


def local_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's tensors by mcore name, without the ``_extra_state`` entries."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state") and v is not None}


def load_state_dict(model, state: dict[str, torch.Tensor]) -> None:
    """Load a rank's mcore state dict; every weight must be present and of the right shape."""
    own = local_state_dict(model)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(f"state dict does not fit this stage: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{name}: checkpoint shape {tuple(state[name].shape)} != model shape {tuple(tensor.shape)}")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(state[name].to(dtype=tensor.dtype, device=tensor.device))


def load_hf_weights(model, arch: ModelArch, hf_dir: str | Path, topology: Topology,
                    num_layer_list: Optional[list[int]] = None) -> None:
    """Fill this rank's stage with its shard of an HF checkpoint, read lazily (no full-model copy)."""
    from megatron.core import parallel_state as ps

    from mindr1.models.adapter import mcore_rank_state_dict_from_hf, open_hf_checkpoint

    get_hf, _names = open_hf_checkpoint(hf_dir)
    state = mcore_rank_state_dict_from_hf(arch, get_hf, ps.get_tensor_model_parallel_rank(), topology.tp,
                                          ps.get_pipeline_model_parallel_rank(), topology.pp,
                                          num_layer_list=num_layer_list)
    load_state_dict(model, state)


def gather_vocab_parallel(logits_BSV: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """All-gather vocab-parallel logits over TP and drop the padded vocabulary rows."""
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    full = gather_from_tensor_model_parallel_region(logits_BSV)
    return full[..., :vocab_size]


def mask_padded_vocab(logits_BSV: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Set the logits of padded vocabulary rows to -inf on this TP rank's slice.

    Megatron pads the vocabulary to a multiple of ``make_vocab_size_divisible_by * TP``; the padded
    rows would otherwise take part in the softmax, so losses and log-probs would depend on TP and
    differ from HF transformers and the rollout engine.
    """
    from megatron.core import parallel_state as ps

    local = logits_BSV.shape[-1]
    start = ps.get_tensor_model_parallel_rank() * local
    n_real = max(0, min(local, vocab_size - start))
    if n_real == local:
        return logits_BSV
    return torch.cat([logits_BSV[..., :n_real],
                      torch.full_like(logits_BSV[..., n_real:], float("-inf"))], dim=-1)


def vocab_parallel_logprobs(logits_BSV: torch.Tensor, labels_BS: torch.Tensor, vocab_size: int,
                            temperature: float = 1.0, consume_logits: bool = False) -> torch.Tensor:
    """log p(label) from vocab-parallel logits (padded rows excluded), differentiable, fp32.

    ``consume_logits``: the caller never reads ``logits_BSV`` again (a loss function given the
    model's output), so fp32 logits are handed to megatron's in-place cross entropy without the
    copy that otherwise protects them (a (B, S, V/TP) fp32 tensor per micro-batch); same result.
    """
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    # megatron's vocab_parallel_cross_entropy works in place on its input: never hand it the
    # caller's tensor (``.float()`` of fp32 logits is the same tensor), so callers may reuse logits.
    if temperature != 1.0:
        logits = logits_BSV.float() / temperature
    elif consume_logits or logits_BSV.dtype != torch.float32:
        logits = logits_BSV.float()  # a new tensor unless the logits are fp32 and the caller is done with them
    else:
        logits = logits_BSV.clone()
    logits = mask_padded_vocab(logits, vocab_size)
    return -vocab_parallel_cross_entropy(logits, labels_BS)

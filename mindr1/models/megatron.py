"""Build a megatron-core GPTModel for one pipeline stage of a :class:`ModelArch`, and load HF weights.

The model description (ModelArch) stays plain; parallelism is applied here, from outside: the
TransformerConfig carries TP/PP sizes, the layer spec is the local one (transformer-engine's when
it imports on a GPU, with its fused kernels), and each rank builds only its own stage. Must be
called inside a :class:`mindr1.parallel.state.ParallelContext`.

This module is the model boundary for names: whatever spec built the model, its tensors leave
and enter it (:func:`named_tensors`, :func:`local_state_dict`, :func:`load_state_dict`) under
the checkpoint's naming, Megatron-LM's local-spec names. transformer-engine's spec fuses the two
RMSNorms into the linears that follow them (``...linear_qkv.layer_norm_weight`` for
``...input_layernorm.weight``); the translation is applied here once, so checkpointing, weight
sync and conversion never see the TE names.
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
    kwargs.update(fused_overrides())
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


def fused_overrides() -> dict:
    """TransformerConfig switches for the fused kernels this machine has (none on CPU).

    With transformer-engine: fused RoPE (TE's kernel) and fused SwiGLU; attention is TE's
    DotProductAttention (flash / cuDNN fused) and the norms are fused into TE's
    LayerNormColumnParallelLinear by the spec itself. Gradient-accumulation fusion also needs
    apex's ``fused_weight_gradient_mlp_cuda`` (megatron's own output layer refuses it otherwise).
    """
    import importlib.util

    if not _use_transformer_engine():
        return {}
    out = {"apply_rope_fusion": True, "bias_activation_fusion": True}
    if importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is not None:
        out["gradient_accumulation_fusion"] = True
    return out


def describe_kernels() -> str:
    """Which layer spec and fused kernels :func:`build_model` uses on this machine (for the log)."""
    if _use_transformer_engine():
        fused = fused_overrides()
        return ("transformer-engine spec: TE attention (flash/fused), RMSNorm fused into the qkv/fc1 linears, "
                "fused RoPE, fused SwiGLU, gradient-accumulation fusion "
                + ("on" if fused.get("gradient_accumulation_fusion") else "off (no fused_weight_gradient_mlp_cuda)"))
    why = "not a CUDA device" if not get_accelerator().is_cuda else "transformer_engine does not import"
    return f"local spec: torch attention, RMSNorm, RoPE and SwiGLU ({why})"


_said: list[str] = []


def _say_kernels_once() -> None:
    """Print the spec / kernel choice once per process, on global rank 0 (the run's log)."""
    import torch.distributed as dist

    if _said or (dist.is_initialized() and dist.get_rank() != 0):
        return
    _said.append(describe_kernels())
    print(f"[mindr1] model: {_said[0]}", flush=True)


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
    _say_kernels_once()
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


def named_tensors(model) -> dict[str, torch.Tensor]:
    """The stage's live parameters and buffers by checkpoint (local-spec) name, whatever spec built it.

    ``model``: a GPTModel (unwrap DDP first). Values are the model's own Parameter objects (their
    ``tensor_model_parallel`` attributes intact), without TE's ``_extra_state`` entries.
    """
    from mindr1.models.adapter import from_te_names

    return from_te_names({k: v for k, v in model.state_dict(keep_vars=True).items()
                          if not k.endswith("_extra_state") and v is not None})


def local_state_dict(model) -> dict[str, torch.Tensor]:
    """The stage's tensors (detached) by checkpoint name: what a checkpoint stores."""
    return {k: v.detach() for k, v in named_tensors(model).items()}


def load_state_dict(model, state: dict[str, torch.Tensor]) -> None:
    """Load a rank's state dict by checkpoint name; every weight must be present and of the right shape."""
    own = named_tensors(model)
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

"""HF <-> megatron-core ``GPTModel`` state-dict adapter (pure tensor code, no distributed).

Key maps are templates per family (``"model.layers.{}.self_attn.q_proj.weight"`` <->
``"decoder.layers.{}.self_attention.linear_qkv.weight"``); each rule names a *packer* that knows how
one HF group of tensors becomes one Megatron tensor split over TP ranks and back:

- ``replicate``: norms, the same on every TP rank.
- ``qkv``: q/k/v stacked per KV group, ``[q rows of the group's heads; k rows; v rows]`` for every
  group, ranks owning contiguous runs of groups (Megatron's ``linear_qkv`` layout).
- ``gate_up``: per rank ``[gate_chunk_r; up_chunk_r]`` (Megatron's ``linear_fc1`` with SwiGLU).
- ``cols``: row-parallel linears (``linear_proj``, ``linear_fc2``), split along the input dim.
- the vocabulary (embedding, output layer) is zero-padded to ``arch.padded_vocab(tp)`` and split in
  contiguous row blocks; only the rank's block is ever built, and export drops the padding.

Layer numbers in a Megatron state dict are local to the pipeline stage; HF names are global.
Every TP shard returned owns its storage (no views into a bigger tensor), so ``torch.save`` and
safetensors write exactly the shard's bytes. One module (a little over 400 lines) because the key
maps, the packers, their inverses and the expected-shape contract are read and changed together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from mindr1.config import ConfigError
from mindr1.models.arch import ModelArch

HF_LAYER = "model.layers.{}."
MCORE_LAYER = "decoder.layers.{}."
HF_EMBED, HF_NORM, HF_LM_HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"
MC_EMBED, MC_NORM, MC_OUTPUT = "embedding.word_embeddings.weight", "decoder.final_layernorm.weight", "output_layer.weight"
# Buffers some older HF checkpoints carry; recomputed by every loader, never converted.
HF_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class AdapterError(ConfigError):
    """Weights do not match the architecture (the message names the key and both shapes)."""


@dataclass(frozen=True)
class Rule:
    """One Megatron tensor (name relative to the layer) made from HF tensors by ``packer``."""

    mcore: str
    hf: tuple[str, ...]
    packer: str
    needs_bias: bool = False


_QWEN2_LLAMA_LAYER = (
    Rule("input_layernorm.weight", ("input_layernorm.weight",), "replicate"),
    Rule("self_attention.linear_qkv.weight",
         ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), "qkv"),
    Rule("self_attention.linear_qkv.bias",
         ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), "qkv", needs_bias=True),
    Rule("self_attention.linear_proj.weight", ("self_attn.o_proj.weight",), "cols"),
    Rule("pre_mlp_layernorm.weight", ("post_attention_layernorm.weight",), "replicate"),
    Rule("mlp.linear_fc1.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), "gate_up"),
    Rule("mlp.linear_fc2.weight", ("mlp.down_proj.weight",), "cols"),
)
LAYER_KEY_MAPS: dict[str, tuple[Rule, ...]] = {"qwen2": _QWEN2_LLAMA_LAYER, "llama": _QWEN2_LLAMA_LAYER}


# transformer-engine's layer spec fuses the norms into the following linear; same tensors, other names.
TE_FUSED_NORMS = {"self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
                  "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight"}


def from_te_names(state: dict) -> dict:
    """A state dict of the transformer-engine spec renamed to the local spec's names used here."""
    def rename(k: str) -> str:
        for te, local in TE_FUSED_NORMS.items():
            if k.endswith("." + te):
                return k[: -len(te)] + local
        return k
    return {rename(k): v for k, v in state.items()}


def to_te_names(state: dict) -> dict:
    """Inverse of :func:`from_te_names` (for loading into a transformer-engine ``GPTModel``)."""
    inverse = {local: te for te, local in TE_FUSED_NORMS.items()}
    def rename(k: str) -> str:
        for local, te in inverse.items():
            if k.endswith("." + local) and k.startswith("decoder.layers."):
                return k[: -len(local)] + te
        return k
    return {rename(k): v for k, v in state.items()}


def layer_rules(arch: ModelArch) -> tuple[Rule, ...]:
    if arch.family not in LAYER_KEY_MAPS:
        raise AdapterError(f"unknown model family {arch.family!r}; supported: {sorted(LAYER_KEY_MAPS)}")
    return tuple(r for r in LAYER_KEY_MAPS[arch.family] if arch.add_qkv_bias or not r.needs_bias)


# ----------------------------------------------------------------------------- topology checks

def pp_layer_ranges(num_layers: int, pp_size: int, num_layer_list: Sequence[int] | None = None) -> list[range]:
    """Global layer ids held by each pipeline stage."""
    if pp_size < 1:
        raise ConfigError(f"pipeline-parallel size must be >= 1, got {pp_size}")
    if num_layer_list:
        sizes = [int(n) for n in num_layer_list]
        if len(sizes) != pp_size:
            raise ConfigError(f"num_layer_list {sizes} has {len(sizes)} entries but PP={pp_size}")
        if sum(sizes) != num_layers or min(sizes) < 1:
            raise ConfigError(f"num_layer_list {sizes} sums to {sum(sizes)} but the model has {num_layers} layers "
                              "(each stage needs >= 1 layer)")
    else:
        if num_layers % pp_size:
            raise ConfigError(f"PP={pp_size} does not divide num_layers={num_layers}; "
                              "pick a divisor or pass num_layer_list")
        sizes = [num_layers // pp_size] * pp_size
    starts = [sum(sizes[:i]) for i in range(pp_size)]
    return [range(s, s + n) for s, n in zip(starts, sizes)]


def check_tp(arch: ModelArch, tp_size: int) -> None:
    """Raise naming the numbers when TP does not divide heads, KV groups, FFN or padded vocab."""
    if tp_size < 1:
        raise ConfigError(f"tensor-parallel size must be >= 1, got {tp_size}")
    for what, n in (("num_attention_heads", arch.num_attention_heads), ("num_query_groups (KV heads)",
                    arch.num_query_groups), ("ffn_hidden_size", arch.ffn_hidden_size)):
        if n % tp_size:
            raise ConfigError(f"TP={tp_size} does not divide {what}={n}")
    arch.padded_vocab(tp_size)  # raises for an explicit padded_vocab_size TP does not divide


# ----------------------------------------------------------------------------- packing helpers

def _own(t: Tensor) -> Tensor:
    """A contiguous tensor that owns exactly its bytes (views are copied)."""
    t = t.detach()
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


def pack_qkv(arch: ModelArch, q: Tensor, k: Tensor, v: Tensor, tp_rank: int, tp_size: int) -> Tensor:
    """Rank ``tp_rank``'s rows of Megatron's fused qkv (weight or bias): per KV group [q; k; v]."""
    ng, d, hpg = arch.num_query_groups, arch.kv_channels, arch.heads_per_group
    rest = q.shape[1:]
    g0, g1 = tp_rank * ng // tp_size, (tp_rank + 1) * ng // tp_size
    parts = [q.reshape(ng, hpg * d, *rest)[g0:g1], k.reshape(ng, d, *rest)[g0:g1], v.reshape(ng, d, *rest)[g0:g1]]
    return _own(torch.cat(parts, dim=1).reshape(-1, *rest))


def unpack_qkv(arch: ModelArch, shards: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`pack_qkv` over all TP shards: full (q, k, v)."""
    ng, d, hpg = arch.num_query_groups, arch.kv_channels, arch.heads_per_group
    full = torch.cat(list(shards), dim=0)
    rest = full.shape[1:]
    per_group = full.reshape(ng, (hpg + 2) * d, *rest)
    q, k, v = torch.split(per_group, [hpg * d, d, d], dim=1)
    return tuple(_own(t.reshape(-1, *rest)) for t in (q, k, v))


def stack_gate_up(gate: Tensor, up: Tensor, tp_rank: int, tp_size: int) -> Tensor:
    """Rank ``tp_rank``'s ``linear_fc1``: [gate chunk r; up chunk r]."""
    return _own(torch.cat([gate.chunk(tp_size, dim=0)[tp_rank], up.chunk(tp_size, dim=0)[tp_rank]], dim=0))


def unstack_gate_up(shards: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    halves = [s.chunk(2, dim=0) for s in shards]
    return _own(torch.cat([h[0] for h in halves])), _own(torch.cat([h[1] for h in halves]))


def vocab_shard(arch: ModelArch, get_rows: Callable[[int, int], Tensor], hidden: int, dtype: torch.dtype,
                tp_rank: int, tp_size: int) -> Tensor:
    """Rank ``tp_rank``'s block of the vocabulary padded to ``arch.padded_vocab(tp_size)`` (zero rows)."""
    rows = arch.padded_vocab(tp_size) // tp_size
    start = tp_rank * rows
    real_stop = min(start + rows, arch.vocab_size)
    out = torch.zeros(rows, hidden, dtype=dtype)
    if real_stop > start:
        out[: real_stop - start] = get_rows(start, real_stop)
    return out


def unpad_vocab(arch: ModelArch, shards: Sequence[Tensor]) -> Tensor:
    return _own(torch.cat(list(shards), dim=0)[: arch.vocab_size])


def _split(rule: Rule, arch: ModelArch, hf: Sequence[Tensor], tp_rank: int, tp_size: int) -> Tensor:
    if rule.packer == "replicate":
        return _own(hf[0])
    if rule.packer == "qkv":
        return pack_qkv(arch, *hf, tp_rank, tp_size)
    if rule.packer == "gate_up":
        return stack_gate_up(*hf, tp_rank, tp_size)
    if rule.packer == "cols":
        return _own(hf[0].chunk(tp_size, dim=1)[tp_rank])
    raise AdapterError(f"unknown packer {rule.packer!r} for {rule.mcore}")


def merge_rule(rule: Rule, arch: ModelArch, shards: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Full HF tensor(s) of one Megatron tensor from its TP shards, by the rule's packer."""
    if rule.packer == "replicate":  # a copy, so no caller keeps a (possibly memory-mapped) shard alive
        return (shards[0].detach().clone(),)
    if rule.packer == "qkv":
        return unpack_qkv(arch, shards)
    if rule.packer == "gate_up":
        return unstack_gate_up(shards)
    if rule.packer == "cols":
        return (_own(torch.cat(list(shards), dim=1)),)
    raise AdapterError(f"unknown packer {rule.packer!r} for {rule.mcore}")


# ----------------------------------------------------------------------------- expected shapes

def hf_expected_shapes(arch: ModelArch) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name of ``arch`` with its shape (lm_head only when untied)."""
    h, f, d = arch.hidden_size, arch.ffn_hidden_size, arch.kv_channels
    nq, nkv = arch.num_attention_heads * d, arch.num_query_groups * d
    layer = {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
             "self_attn.q_proj.weight": (nq, h), "self_attn.k_proj.weight": (nkv, h),
             "self_attn.v_proj.weight": (nkv, h), "self_attn.o_proj.weight": (h, nq),
             "mlp.gate_proj.weight": (f, h), "mlp.up_proj.weight": (f, h), "mlp.down_proj.weight": (h, f)}
    if arch.add_qkv_bias:
        layer.update({"self_attn.q_proj.bias": (nq,), "self_attn.k_proj.bias": (nkv,), "self_attn.v_proj.bias": (nkv,)})
    shapes = {HF_EMBED: (arch.vocab_size, h)}
    for i in range(arch.num_layers):
        shapes.update({HF_LAYER.format(i) + k: s for k, s in layer.items()})
    shapes[HF_NORM] = (h,)
    if not arch.tie_word_embeddings:
        shapes[HF_LM_HEAD] = (arch.vocab_size, h)
    return shapes


def check_hf_shapes(arch: ModelArch, shapes: dict[str, Sequence[int]], source: str = "checkpoint") -> None:
    """Raise naming the key when ``shapes`` (name -> shape) misses, adds or mis-sizes a tensor."""
    expected = hf_expected_shapes(arch)
    missing = [k for k in expected if k not in shapes]
    if missing:
        raise AdapterError(f"{source}: missing {len(missing)} tensor(s) the config needs, e.g. {missing[:3]}")
    extra = [k for k in shapes if k not in expected and not k.endswith(HF_IGNORED_SUFFIXES)
             and not (k == HF_LM_HEAD and arch.tie_word_embeddings)]
    if extra:
        raise AdapterError(f"{source}: {len(extra)} tensor(s) the config does not describe, e.g. {extra[:3]} "
                           f"(family {arch.family}, add_qkv_bias={arch.add_qkv_bias}, "
                           f"num_layers={arch.num_layers})")
    for k, want in expected.items():
        if tuple(shapes[k]) != tuple(want):
            raise AdapterError(f"{source}: tensor {k} has shape {tuple(shapes[k])} but the config implies "
                               f"{tuple(want)}")


def mcore_expected_shapes(arch: ModelArch, tp_size: int, pp_rank: int = 0, pp_size: int = 1,
                          num_layer_list: Sequence[int] | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of one (tp, pp) rank's Megatron state dict, by arithmetic."""
    check_tp(arch, tp_size)
    h, f, d, t = arch.hidden_size, arch.ffn_hidden_size, arch.kv_channels, tp_size
    qkv = (arch.num_attention_heads + 2 * arch.num_query_groups) * d // t
    layer = {"input_layernorm.weight": (h,), "self_attention.linear_qkv.weight": (qkv, h),
             "self_attention.linear_proj.weight": (h, arch.num_attention_heads * d // t),
             "pre_mlp_layernorm.weight": (h,), "mlp.linear_fc1.weight": (2 * f // t, h),
             "mlp.linear_fc2.weight": (h, f // t)}
    if arch.add_qkv_bias:
        layer["self_attention.linear_qkv.bias"] = (qkv,)
    ranges = pp_layer_ranges(arch.num_layers, pp_size, num_layer_list)
    out: dict[str, tuple[int, ...]] = {}
    vocab = (arch.padded_vocab(t) // t, h)
    if pp_rank == 0:
        out[MC_EMBED] = vocab
    for local in range(len(ranges[pp_rank])):
        out.update({MCORE_LAYER.format(local) + k: s for k, s in layer.items()})
    if pp_rank == pp_size - 1:
        out[MC_NORM] = (h,)
        if not arch.tie_word_embeddings or pp_size > 1:
            out[MC_OUTPUT] = vocab
    return out


# ----------------------------------------------------------------------------- one layer

def hf_layer_to_mcore_rank(arch: ModelArch, hf_layer: dict[str, Tensor], tp_rank: int, tp_size: int) -> dict[str, Tensor]:
    """One HF layer (layer-relative names) -> TP rank ``tp_rank``'s layer-relative Megatron tensors."""
    check_tp(arch, tp_size)
    out = {}
    for rule in layer_rules(arch):
        missing = [k for k in rule.hf if k not in hf_layer]
        if missing:
            raise AdapterError(f"HF layer is missing {missing} (needed for {rule.mcore})")
        out[rule.mcore] = _split(rule, arch, [hf_layer[k] for k in rule.hf], tp_rank, tp_size)
    return out


def hf_layer_to_mcore(arch: ModelArch, hf_layer: dict[str, Tensor], tp_size: int) -> list[dict[str, Tensor]]:
    """One HF layer -> a layer-relative Megatron dict per TP rank."""
    return [hf_layer_to_mcore_rank(arch, hf_layer, r, tp_size) for r in range(tp_size)]


def mcore_layer_to_hf(arch: ModelArch, tp_shards: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Inverse of :func:`hf_layer_to_mcore`: gathers TP shards into full HF tensors (layer-relative)."""
    out = {}
    for rule in layer_rules(arch):
        missing = [r for r, s in enumerate(tp_shards) if rule.mcore not in s]
        if missing:
            raise AdapterError(f"Megatron layer is missing {rule.mcore} on TP rank(s) {missing}")
        out.update(zip(rule.hf, merge_rule(rule, arch, [s[rule.mcore] for s in tp_shards])))
    return out


# ----------------------------------------------------------------------------- non-layer weights

def hf_nonlayer_to_mcore_rank(arch: ModelArch, get_hf: Callable[[str], Tensor], tp_rank: int, tp_size: int,
                              pp_rank: int, pp_size: int, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Embedding (first stage), final norm and output layer (last stage) for one (tp, pp) rank.

    With tied embeddings the output layer is absent when PP=1 and a copy of the embedding on the last
    stage when PP>1 (Megatron keeps the two in sync by an all-reduce of their gradients).
    """
    check_tp(arch, tp_size)
    out = {}
    for key, hf_name in nonlayer_sources(arch, pp_rank, pp_size):
        if key == MC_NORM:
            out[key] = _cast(get_hf(hf_name), dtype)
        else:
            out[key] = _vocab_rank(arch, get_hf, hf_name, tp_rank, tp_size, dtype)
    return out


def nonlayer_sources(arch: ModelArch, pp_rank: int, pp_size: int) -> list[tuple[str, str]]:
    """``(mcore key, HF name)`` of the stage's non-layer tensors, in state-dict order (embedding first)."""
    out = [(MC_EMBED, HF_EMBED)] if pp_rank == 0 else []
    if pp_rank == pp_size - 1:
        out.append((MC_NORM, HF_NORM))
        if not arch.tie_word_embeddings:
            out.append((MC_OUTPUT, HF_LM_HEAD))
        elif pp_size > 1:
            out.append((MC_OUTPUT, HF_EMBED))
    return out


def _vocab_rank(arch: ModelArch, get_hf: Callable[[str], Tensor], name: str, tp_rank: int, tp_size: int,
                dtype: torch.dtype | None) -> Tensor:
    """Rank ``tp_rank``'s padded block of vocabulary tensor ``name``, reading only its rows when it can."""
    rows = getattr(get_hf, "get_rows", None)
    if rows is None:
        full = get_hf(name)
        rows = lambda _n, a, b: full[a:b]  # noqa: E731 - adapts a plain getter
    first = rows(name, 0, 1)
    return vocab_shard(arch, lambda a, b: rows(name, a, b).to(dtype or first.dtype), arch.hidden_size,
                       dtype or first.dtype, tp_rank, tp_size)


def hf_nonlayer_to_mcore(arch: ModelArch, hf: dict[str, Tensor], tp_size: int, pp_rank: int = 0,
                         pp_size: int = 1) -> list[dict[str, Tensor]]:
    """HF embedding / norm / lm_head (full names) -> the stage's non-layer Megatron tensors per TP rank."""
    def get(name: str) -> Tensor:
        if name not in hf:
            raise AdapterError(f"missing HF tensor {name}")
        return hf[name]
    return [hf_nonlayer_to_mcore_rank(arch, get, r, tp_size, pp_rank, pp_size) for r in range(tp_size)]


def mcore_nonlayer_to_hf(arch: ModelArch, tp_shards: Sequence[dict[str, Tensor]], pp_rank: int = 0,
                         pp_size: int = 1) -> dict[str, Tensor]:
    """The stage's non-layer Megatron tensors (all TP ranks) -> full HF tensors (vocab unpadded)."""
    def gather(name: str) -> list[Tensor]:
        missing = [r for r, s in enumerate(tp_shards) if name not in s]
        if missing:
            raise AdapterError(f"Megatron stage {pp_rank} is missing {name} on TP rank(s) {missing}")
        return [s[name] for s in tp_shards]

    out = {}
    if pp_rank == 0:
        out[HF_EMBED] = unpad_vocab(arch, gather(MC_EMBED))
    if pp_rank == pp_size - 1:
        out[HF_NORM] = _own(gather(MC_NORM)[0])
        if not arch.tie_word_embeddings:
            out[HF_LM_HEAD] = unpad_vocab(arch, gather(MC_OUTPUT))
    return out


def _cast(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


# ----------------------------------------------------------------------------- whole ranks / stages

def read_hf_layer(arch: ModelArch, get_hf: Callable[[str], Tensor], layer: int,
                  dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """HF layer ``layer`` (global id) with layer-relative names, read through ``get_hf``."""
    prefix = HF_LAYER.format(layer)
    return {k: _cast(get_hf(prefix + k), dtype) for rule in layer_rules(arch) for k in rule.hf}


def mcore_rank_state_dict_from_hf(arch: ModelArch, get_hf: Callable[[str], Tensor], tp_rank: int, tp_size: int,
                                  pp_rank: int, pp_size: int, num_layer_list: Sequence[int] | None = None,
                                  dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """The full local state dict of one (tp, pp) rank with mcore names (local layer numbers).

    HF tensors are read one layer at a time through ``get_hf(name)``; only this rank's part is kept.
    """
    check_tp(arch, tp_size)
    ranges = pp_layer_ranges(arch.num_layers, pp_size, num_layer_list)
    if not 0 <= pp_rank < pp_size or not 0 <= tp_rank < tp_size:
        raise ConfigError(f"rank (tp={tp_rank}, pp={pp_rank}) outside TP={tp_size}, PP={pp_size}")
    nonlayer = hf_nonlayer_to_mcore_rank(arch, get_hf, tp_rank, tp_size, pp_rank, pp_size, dtype)
    out = {MC_EMBED: nonlayer.pop(MC_EMBED)} if MC_EMBED in nonlayer else {}
    for local, layer in enumerate(ranges[pp_rank]):
        shard = hf_layer_to_mcore_rank(arch, read_hf_layer(arch, get_hf, layer, dtype), tp_rank, tp_size)
        out.update({MCORE_LAYER.format(local) + k: v for k, v in shard.items()})
    out.update(nonlayer)
    return out


def hf_stage_to_mcore(arch: ModelArch, get_hf: Callable[[str], Tensor], tp_size: int, pp_rank: int, pp_size: int,
                      num_layer_list: Sequence[int] | None = None,
                      dtype: torch.dtype | None = None) -> Iterator[tuple[str, list[Tensor]]]:
    """``(mcore key, [tensor of TP rank 0, 1, ...])`` for every tensor of stage ``pp_rank``, in the key order
    of :func:`mcore_rank_state_dict_from_hf`, and equal to its tensors. Each HF layer is read once for all
    TP ranks (the vocabulary blocks read only their own rows); one layer is resident at a time."""
    check_tp(arch, tp_size)
    ranges = pp_layer_ranges(arch.num_layers, pp_size, num_layer_list)
    sources = nonlayer_sources(arch, pp_rank, pp_size)

    def nonlayer(key: str, hf_name: str) -> list[Tensor]:
        if key == MC_NORM:
            norm = _cast(get_hf(hf_name), dtype)
            return [norm] * tp_size
        return [_vocab_rank(arch, get_hf, hf_name, r, tp_size, dtype) for r in range(tp_size)]

    if sources and sources[0][0] == MC_EMBED:
        yield MC_EMBED, nonlayer(*sources.pop(0))
    for local, layer in enumerate(ranges[pp_rank]):
        hf = read_hf_layer(arch, get_hf, layer, dtype)
        prefix = MCORE_LAYER.format(local)
        for rule in layer_rules(arch):
            parts = [hf[k] for k in rule.hf]
            yield prefix + rule.mcore, [_split(rule, arch, parts, r, tp_size) for r in range(tp_size)]
        del hf
    for key, hf_name in sources:
        yield key, nonlayer(key, hf_name)


def mcore_stage_dtypes(arch: ModelArch, hf_dtypes: dict[str, torch.dtype], pp_rank: int, pp_size: int,
                       num_layer_list: Sequence[int] | None = None,
                       dtype: torch.dtype | None = None) -> dict[str, torch.dtype]:
    """The dtype of every tensor :func:`hf_stage_to_mcore` yields, from the HF tensors' dtypes alone."""
    ranges = pp_layer_ranges(arch.num_layers, pp_size, num_layer_list)
    out = {}
    for key, hf_name in nonlayer_sources(arch, pp_rank, pp_size):
        out[key] = dtype or hf_dtypes[hf_name]
    for local, layer in enumerate(ranges[pp_rank]):
        prefix = HF_LAYER.format(layer)
        for rule in layer_rules(arch):
            found = [dtype or hf_dtypes[prefix + k] for k in rule.hf]
            result = found[0]
            for d in found[1:]:
                result = torch.promote_types(result, d)
            out[MCORE_LAYER.format(local) + rule.mcore] = result
    return out


def _layer_of(shard: dict[str, Tensor], local: int) -> dict[str, Tensor]:
    prefix = MCORE_LAYER.format(local)
    return {k[len(prefix):]: v for k, v in shard.items() if k.startswith(prefix) and not k.endswith("_extra_state")}


def hf_tensors_from_mcore(arch: ModelArch, tp_shards_for_stage: Sequence[dict[str, Tensor]], pp_rank: int,
                          pp_size: int, num_layer_list: Sequence[int] | None = None) -> Iterator[tuple[str, Tensor]]:
    """HF-named full tensors of one PP stage, layer by layer (embedding first, norm/lm_head last).

    ``tp_shards_for_stage`` are the stage's Megatron state dicts of every TP rank (local layer
    numbers; ``_extra_state`` entries ignored). This is what weight sync streams into engines.
    """
    ranges = pp_layer_ranges(arch.num_layers, pp_size, num_layer_list)
    nonlayer = mcore_nonlayer_to_hf(arch, tp_shards_for_stage, pp_rank, pp_size)
    if HF_EMBED in nonlayer:
        yield HF_EMBED, nonlayer.pop(HF_EMBED)
    for local, layer in enumerate(ranges[pp_rank]):
        hf = mcore_layer_to_hf(arch, [_layer_of(s, local) for s in tp_shards_for_stage])
        prefix = HF_LAYER.format(layer)
        for k, v in hf.items():
            yield prefix + k, v
    yield from nonlayer.items()


def open_hf_checkpoint(hf_dir) -> tuple[Callable[[str], Tensor], list[str]]:
    """``(get_hf, names)`` reading an HF directory lazily (safetensors ``safe_open``, sharded via
    ``model.safetensors.index.json``, or ``pytorch_model.bin``); see :mod:`mindr1.checkpoint.hf_io`."""
    from mindr1.checkpoint.hf_io import open_hf_checkpoint as _open
    return _open(hf_dir)

"""Weight sync (resharding): a Megatron model split TP x PP -> one rollout engine, in bounded buckets.

Every rank of the model-parallel group calls :func:`sync_weights` with its own ``GPTModel``
chunk; the rank holding the engine (``engine_rank``, a global rank of TP rank 0; stage 0's by
default) also passes the engine. What travels:

1. **TP gather, one tensor at a time.** Inside each PP stage the TP ranks all-gather one
   Megatron tensor at a time (the embedding, a layer's fused qkv, its output projection, ...)
   over the TP group, and the stage's TP rank 0 turns the shards into HF-named full tensors
   with the adapter's packing rules (qkv / gate-up unpacking; the vocabulary unpadded).
   Replicated tensors (norms) are not gathered. So a rank holds at most one gathered tensor and
   its HF pieces beyond its shard: less than one layer.
2. **Buckets.** TP rank 0 of each stage copies HF tensors, as they come, into a flat byte
   buffer of at most ``bucket_size_mb`` (a larger tensor travels alone) and sends each full
   bucket, with a header naming the tensors, shapes and dtypes, to the engine's rank.
3. **PP stages, one after the other.** The choice: one engine receives every stage's buckets,
   which are point-to-point messages through the PP group, one bucket at a time, stage 0 first
   (the engine's own stage is delivered locally without a copy). The engine's rank unpacks each
   bucket into views and hands them to ``engine.update_weights`` lazily, so it holds one bucket
   at a time; a stage whose turn has not come blocks on its first send, holding one layer and
   one bucket. Stages do their gathers concurrently with the engine's rank draining earlier ones.

Nobody holds the whole model unless the engine itself does. Tied embeddings send
``model.embed_tokens.weight`` once (stage 0's copy; Megatron keeps the last stage's output-layer
copy equal by all-reducing their gradients). Every collective waits with ``timeout_s``.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from mindr1.models.adapter import (
    HF_EMBED, HF_LAYER, HF_LM_HEAD, HF_NORM, MC_EMBED, MC_NORM, MC_OUTPUT, MCORE_LAYER,
    layer_rules, merge_rule, pp_layer_ranges, unpad_vocab,
)
from mindr1.models.arch import ModelArch
from mindr1.models.megatron import named_tensors

DEFAULT_BUCKET_MB = 256
DEFAULT_TIMEOUT_S = 600.0


@dataclass
class SyncStats:
    """What one sync moved (on the engine's rank: every stage; elsewhere: this stage's part)."""

    tensors: int = 0
    bytes: int = 0
    buckets: int = 0
    max_bucket_bytes: int = 0
    names: list = field(default_factory=list)


def _wait(work, what: str, timeout_s: float) -> None:
    if not work.wait(timeout=datetime.timedelta(seconds=timeout_s)):
        raise RuntimeError(f"weight sync: {what} did not finish within {timeout_s} s")


def _unwrap(model):
    """The GPTModel inside DDP / Float16Module wrappers (and a one-chunk list)."""
    if isinstance(model, (list, tuple)):
        if len(model) != 1:
            raise ValueError("weight sync supports one model chunk per rank (no virtual pipeline)")
        model = model[0]
    while hasattr(model, "module"):
        model = model.module
    return model


# ----------------------------------------------------------------------------- TP gather per unit

def _gather(tensor: torch.Tensor, tp_group, tp_size: int, timeout_s: float) -> list[torch.Tensor]:
    if tp_size == 1:
        return [tensor.detach()]
    local = tensor.detach().contiguous()
    out = [torch.empty_like(local) for _ in range(tp_size)]
    _wait(dist.all_gather(out, local, group=tp_group, async_op=True), "TP all_gather", timeout_s)
    return out


def _gather_param(params: dict, name: str, tp_group, tp_size: int, timeout_s: float) -> list[torch.Tensor]:
    """One tensor's shards from every TP rank (replicated tensors, e.g. norms, are read locally)."""
    tensor = params[name]
    if getattr(tensor, "tensor_model_parallel", False):
        return _gather(tensor, tp_group, tp_size, timeout_s)
    return [tensor.detach()] * tp_size


def stage_hf_tensors(model, arch: ModelArch, pp_rank: int, pp_size: int, tp_group, tp_size: int,
                     num_layer_list=None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[tuple[str, torch.Tensor]]:
    """This stage's HF-named full tensors in HF order (every TP rank must iterate it).

    One Megatron tensor is gathered and converted at a time (a layer's qkv, then its output
    projection, ...), so a rank holds at most one tensor's shards plus its HF pieces. On TP ranks
    other than 0 it yields nothing but takes part in the gathers.
    """
    params = named_tensors(_unwrap(model))  # checkpoint names, whatever the layer spec
    is_writer = tp_group is None or tp_size == 1 or dist.get_rank(tp_group) == 0

    def vocab(mc_name: str) -> Optional[torch.Tensor]:
        shards = _gather_param(params, mc_name, tp_group, tp_size, timeout_s)
        return unpad_vocab(arch, shards) if is_writer else None

    if pp_rank == 0:
        embed = vocab(MC_EMBED)
        if is_writer:
            yield HF_EMBED, embed
        del embed
    layers = pp_layer_ranges(arch.num_layers, pp_size, num_layer_list)[pp_rank]
    for local, layer in enumerate(layers):
        for rule in layer_rules(arch):
            shards = _gather_param(params, MCORE_LAYER.format(local) + rule.mcore, tp_group, tp_size, timeout_s)
            merged = merge_rule(rule, arch, shards) if is_writer else ()
            del shards
            for hf_name, tensor in zip(rule.hf, merged):
                yield HF_LAYER.format(layer) + hf_name, tensor
            del merged
    if pp_rank == pp_size - 1:
        if is_writer:
            yield HF_NORM, params[MC_NORM].detach()
        if not arch.tie_word_embeddings:
            head = vocab(MC_OUTPUT)
            if is_writer:
                yield HF_LM_HEAD, head
            del head


# ----------------------------------------------------------------------------- buckets

def iter_buckets(tensors, bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group ``(name, tensor)`` pairs into lists of at most ``bucket_bytes`` (a bigger tensor alone)."""
    bucket, size = [], 0
    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def pack_bucket(bucket: list[tuple[str, torch.Tensor]]) -> tuple[dict, torch.Tensor]:
    """One flat uint8 buffer and a header ``{"entries": [[name, dtype, shape, offset, nbytes], ...]}``."""
    return next(iter_packed_buckets(iter(bucket), max(1, sum(_nbytes(t) for _, t in bucket))))


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def iter_packed_buckets(tensors, bucket_bytes: int) -> Iterator[tuple[dict, torch.Tensor]]:
    """Pack ``(name, tensor)`` pairs into flat byte buffers of at most ``bucket_bytes``, as they come.

    Each tensor is copied into the buffer and released at once, so packing holds one buffer plus
    the tensor in hand; a tensor bigger than the bucket travels in a buffer of its own.
    """
    flat, entries, offset = None, [], 0
    for name, tensor in tensors:
        nbytes = _nbytes(tensor)
        if flat is not None and offset + nbytes > flat.numel():
            yield {"entries": entries}, flat[:offset]
            flat, entries, offset = None, [], 0
        if flat is None:
            flat = torch.empty(max(bucket_bytes, nbytes), dtype=torch.uint8, device=tensor.device)
        flat[offset: offset + nbytes].copy_(tensor.detach().contiguous().reshape(-1).view(torch.uint8))
        entries.append([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), offset, nbytes])
        offset += nbytes
        del tensor
    if entries:
        yield {"entries": entries}, flat[:offset]


def unpack_bucket(header: dict, flat: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """Views of ``flat`` named as in ``header`` (no copy)."""
    for name, dtype, shape, offset, nbytes in header["entries"]:
        yield name, flat[offset: offset + nbytes].view(getattr(torch, dtype)).view(shape)


# ----------------------------------------------------------------------------- point to point

_END = {"entries": [], "end": True}


def _send_bucket(header: dict, flat: Optional[torch.Tensor], dst: int, group, device, timeout_s: float) -> None:
    meta = torch.tensor(bytearray(json.dumps(header).encode()), dtype=torch.uint8, device=device)
    sizes = torch.tensor([meta.numel(), 0 if flat is None else flat.numel()], dtype=torch.int64, device=device)
    _wait(dist.isend(sizes, dst=dst, group=group), f"send of a bucket header size to rank {dst}", timeout_s)
    _wait(dist.isend(meta, dst=dst, group=group), f"send of a bucket header to rank {dst}", timeout_s)
    if flat is not None and flat.numel():
        _wait(dist.isend(flat, dst=dst, group=group), f"send of a bucket to rank {dst}", timeout_s)


def _recv_bucket(src: int, group, device, timeout_s: float) -> tuple[dict, torch.Tensor]:
    sizes = torch.empty(2, dtype=torch.int64, device=device)
    _wait(dist.irecv(sizes, src=src, group=group), f"receive of a bucket header size from rank {src}", timeout_s)
    meta = torch.empty(int(sizes[0]), dtype=torch.uint8, device=device)
    _wait(dist.irecv(meta, src=src, group=group), f"receive of a bucket header from rank {src}", timeout_s)
    header = json.loads(meta.cpu().numpy().tobytes().decode())
    flat = torch.empty(int(sizes[1]), dtype=torch.uint8, device=device)
    if flat.numel():
        _wait(dist.irecv(flat, src=src, group=group), f"receive of a bucket from rank {src}", timeout_s)
    return header, flat


# ----------------------------------------------------------------------------- the sync

@dataclass
class _Groups:
    tp_group: object
    tp_size: int
    tp_rank: int
    pp_group: object
    pp_size: int
    pp_rank: int


def _megatron_groups() -> _Groups:
    from megatron.core import parallel_state as ps

    return _Groups(ps.get_tensor_model_parallel_group(), ps.get_tensor_model_parallel_world_size(),
                   ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_group(),
                   ps.get_pipeline_model_parallel_world_size(), ps.get_pipeline_model_parallel_rank())


def sync_weights(model, arch: ModelArch, engine=None, *, bucket_size_mb: float = DEFAULT_BUCKET_MB,
                 engine_pp_rank: int = 0, num_layer_list=None, timeout_s: float = DEFAULT_TIMEOUT_S) -> SyncStats:
    """Stream this model-parallel group's weights into ``engine`` (see the module docstring).

    Called by every rank of the TP x PP group with its model chunk. ``engine`` is required on TP
    rank 0 of PP stage ``engine_pp_rank`` and ignored elsewhere. Returns what moved.
    """
    g = _megatron_groups()
    bucket_bytes = max(1, int(bucket_size_mb * 2**20))
    stats = SyncStats()
    local = stage_hf_tensors(model, arch, g.pp_rank, g.pp_size, g.tp_group, g.tp_size, num_layer_list, timeout_s)
    if g.tp_rank != 0:
        for _ in local:  # takes part in the TP gathers; TP rank 0 sends
            pass
        return stats
    if g.pp_rank == engine_pp_rank:
        if engine is None:
            raise ValueError(f"weight sync: the engine must be passed on TP rank 0 of PP stage {engine_pp_rank}")
        stream = _engine_stream(local, g, engine_pp_rank, bucket_bytes, stats, _device_of(model), timeout_s)
        engine.update_weights(stream)
        return stats
    dst = dist.get_global_rank(g.pp_group, engine_pp_rank)
    device = _device_of(model)
    for header, flat in iter_packed_buckets(local, bucket_bytes):
        _count(stats, header, flat.numel())
        _send_bucket(header, flat, dst, g.pp_group, device, timeout_s)
        del flat
    _send_bucket(_END, None, dst, g.pp_group, device, timeout_s)
    return stats


def _engine_stream(local, g: _Groups, engine_pp_rank: int, bucket_bytes: int, stats: SyncStats,
                   device: torch.device, timeout_s: float) -> Iterator[tuple[str, torch.Tensor]]:
    """Every stage's tensors in stage order: the own stage's directly, the others' bucket by bucket."""
    for stage in range(g.pp_size):
        if stage == engine_pp_rank:
            for bucket in iter_buckets(local, bucket_bytes):
                _count(stats, {"entries": [[n] for n, _ in bucket]},
                       sum(t.numel() * t.element_size() for _, t in bucket))
                yield from bucket
            continue
        src = dist.get_global_rank(g.pp_group, stage)
        while True:
            header, flat = _recv_bucket(src, g.pp_group, device, timeout_s)
            if header.get("end"):
                break
            _count(stats, header, flat.numel())
            yield from unpack_bucket(header, flat)
            del flat


def _count(stats: SyncStats, header: dict, nbytes: int) -> None:
    stats.buckets += 1
    stats.tensors += len(header["entries"])
    stats.bytes += nbytes
    stats.max_bucket_bytes = max(stats.max_bucket_bytes, nbytes)
    stats.names.extend(e[0] for e in header["entries"])


def _device_of(model) -> torch.device:
    for p in _unwrap(model).parameters():
        return p.device
    return torch.device("cpu")


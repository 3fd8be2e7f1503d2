"""Megatron checkpoints as a stream: write one (tp, pp) shard at a time, read one layer at a time.

:class:`MegatronCheckpoint` is a lazy *HF view* of a TP/PP-sharded checkpoint: ``ckpt(hf_name)``
gathers that tensor from the TP shards of its stage. Shards are opened with ``torch.load(mmap=True)``
per layer and dropped right after, so the resident memory is one gathered layer, never a stage.
Re-sharding Megatron -> Megatron is then the HF -> Megatron writer fed by this view.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import torch

from mindr1.checkpoint import layout
from mindr1.checkpoint.layout import CheckpointError
from mindr1.config import ConfigError, build
from mindr1.models import adapter as A
from mindr1.models.arch import ModelArch

_RANK_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.")


def megatron_args(arch: ModelArch, tp: int, pp: int, num_layer_list: Sequence[int] | None, params_dtype: str,
                  hf_config: dict | None, extra: dict | None = None) -> dict:
    """The plain-dict ``args`` of a shard: Megatron-LM's names, plus what HF export needs."""
    args = {
        "tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp,
        "num_layers": arch.num_layers, "num_layer_list": list(num_layer_list) if num_layer_list else None,
        "hidden_size": arch.hidden_size, "ffn_hidden_size": arch.ffn_hidden_size,
        "num_attention_heads": arch.num_attention_heads, "kv_channels": arch.kv_channels,
        "group_query_attention": arch.num_query_groups != arch.num_attention_heads,
        "num_query_groups": arch.num_query_groups, "padded_vocab_size": arch.padded_vocab(tp),
        "vocab_size": arch.vocab_size, "make_vocab_size_divisible_by": arch.make_vocab_size_divisible_by,
        "max_position_embeddings": arch.max_position_embeddings, "position_embedding_type": "rope",
        "rotary_base": arch.rope_theta, "normalization": "RMSNorm", "norm_epsilon": arch.rms_norm_eps,
        "swiglu": True, "add_qkv_bias": arch.add_qkv_bias, "add_bias_linear": False,
        "untie_embeddings_and_output_weights": not arch.tie_word_embeddings, "params_dtype": params_dtype,
        "model_type_hf": arch.family, "mindr1_arch": arch.to_dict(), "hf_config": hf_config,
    }
    args.update(extra or {})
    return args


def write_megatron(out_root: Path, arch: ModelArch, get_hf: Callable[[str], torch.Tensor], tp: int, pp: int,
                   num_layer_list: Sequence[int] | None, dtype: torch.dtype | None, args: dict,
                   fsync: bool = True) -> list[Path]:
    """Write a ``release`` checkpoint, one pipeline stage at a time, all its TP shards together.

    Each HF layer is read once and split for every TP rank; each rank's piece goes straight into that
    rank's ``model_optim_rng.pt`` (a torch zip file written record by record by one thread per rank)
    while the next layer is read. The files are byte-identical to ``torch.save`` of the whole rank
    state dict (see :class:`_ShardStream`). Resident memory: the HF layer being split, its TP pieces,
    and the previous layer's pieces still being written (never a whole shard). A reader that cannot
    tell its tensors' dtypes up front (no ``dtypes()``) falls back to building each rank in memory.
    """
    A.check_tp(arch, tp)
    A.pp_layer_ranges(arch.num_layers, pp, num_layer_list)
    dtypes = getattr(get_hf, "dtypes", None)
    hf_dtypes = dtypes() if dtypes is not None else None
    written = []
    for p in range(pp):
        paths = [layout.shard_path(out_root, layout.RELEASE, t, p, pp) for t in range(tp)]
        if hf_dtypes is None:
            for t in range(tp):
                model = A.mcore_rank_state_dict_from_hf(arch, get_hf, t, tp, p, pp, num_layer_list, dtype)
                state = {"model": model, "iteration": 0, "checkpoint_version": layout.CHECKPOINT_VERSION,
                         "args": args}
                layout.save_shard(paths[t], state, fsync=fsync)
                del model, state
        else:
            _write_stage(arch, get_hf, hf_dtypes, tp, p, pp, num_layer_list, dtype, args, paths, fsync)
        written.extend(paths)
    layout.write_latest(out_root, layout.RELEASE)
    return written


def _write_stage(arch: ModelArch, get_hf, hf_dtypes: dict, tp: int, p: int, pp: int, num_layer_list, dtype,
                 args: dict, paths: list[Path], fsync: bool) -> None:
    shapes = A.mcore_expected_shapes(arch, tp, p, pp, num_layer_list)  # the same on every TP rank
    dtypes = A.mcore_stage_dtypes(arch, hf_dtypes, p, pp, num_layer_list, dtype)
    # The key order of hf_stage_to_mcore / mcore_rank_state_dict_from_hf: embedding, layers, norm, output.
    model = {k: (shapes[k], dtypes[k]) for k in _stage_keys(arch, p, pp, dtypes)}
    state = {"model": model, "iteration": 0, "checkpoint_version": layout.CHECKPOINT_VERSION, "args": args}
    streams: list[_ShardStream] = []
    pools = [ThreadPoolExecutor(1, thread_name_prefix=f"shard{t}") for t in range(tp)]
    try:
        for t in range(tp):
            streams.append(_ShardStream(paths[t], state))
        pending: list[Future] = []
        for key, pieces in A.hf_stage_to_mcore(arch, get_hf, tp, p, pp, num_layer_list, dtype):
            for f in pending:  # at most one key's pieces in flight while the next are read and split
                f.result()
            pending = [pools[t].submit(streams[t].write, key, pieces[t]) for t in range(tp)]
            del pieces
        for f in pending:
            f.result()
        for f in [pools[t].submit(streams[t].finish, fsync) for t in range(tp)]:
            f.result()
        if fsync:
            for folder in {path.parent for path in paths}:
                layout.fsync_dir(folder)
    finally:
        for pool in pools:
            pool.shutdown(wait=True)
        for stream in streams:
            stream.abort()


def _stage_keys(arch: ModelArch, p: int, pp: int, dtypes: dict) -> list[str]:
    """The stage's keys in state-dict order: embedding, layers (rule order, as ``dtypes`` has them), norm, output."""
    nonlayer = [k for k, _ in A.nonlayer_sources(arch, p, pp)]
    head = [k for k in nonlayer if k == A.MC_EMBED]
    layers = [k for k in dtypes if k.startswith("decoder.layers.")]
    return head + layers + [k for k in nonlayer if k != A.MC_EMBED]


class _Capture:
    """Stands in for torch's zip writer: records what ``torch.save`` would write, in order."""

    def __init__(self):
        self.records: list[tuple[str, object, int]] = []

    def write_record(self, name, data, nbytes):
        self.records.append((name, data, nbytes))


class _ShardStream:
    """A ``model_optim_rng.pt`` written tensor by tensor, byte-identical to ``torch.save(state, path)``.

    ``torch.save`` writes ``data.pkl`` (the pickle, which holds only each tensor's storage key, dtype
    and shape), three small records, then each storage in the order the pickle met them. The pickle
    is made by torch's own ``_save`` over placeholder tensors (allocated, never touched, so not
    resident), then the real tensors are written as they arrive; each is checked against its
    placeholder. The file is a temporary one renamed into place by :meth:`finish`.
    """

    def __init__(self, path: Path, state: dict):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        placeholders = {k: torch.empty(shape, dtype=dt) for k, (shape, dt) in state["model"].items()}
        by_ptr = {t.untyped_storage().data_ptr(): k for k, t in placeholders.items()}
        capture = _Capture()
        torch.serialization._save({**state, "model": placeholders}, capture, pickle,
                                  torch.serialization.DEFAULT_PROTOCOL, False)
        self.head = [(n, d, b) for n, d, b in capture.records if not n.startswith("data/")]
        self.expected = [(n, by_ptr[d.data_ptr()], tuple(placeholders[by_ptr[d.data_ptr()]].shape),
                          placeholders[by_ptr[d.data_ptr()]].dtype, b)
                         for n, d, b in capture.records if n.startswith("data/")]
        del placeholders, by_ptr, capture
        self.next = 0
        self._opener = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._opener = torch.serialization._open_zipfile_writer(str(self.tmp))
            self.zf = self._opener.__enter__()
            for name, data, nbytes in self.head:
                self.zf.write_record(name, data, nbytes)
        except (OSError, RuntimeError) as exc:
            self.abort()
            raise layout.write_error(path, exc) from None

    def write(self, key: str, tensor: torch.Tensor) -> None:
        record, want_key, shape, dtype, nbytes = self.expected[self.next]
        storage = tensor.untyped_storage()
        if (key != want_key or tuple(tensor.shape) != shape or tensor.dtype != dtype or not tensor.is_contiguous()
                or tensor.storage_offset() != 0 or storage.nbytes() != nbytes):
            raise CheckpointError(f"{self.path}: internal error: {key} {tuple(tensor.shape)} {tensor.dtype} does "
                                  f"not match the planned {want_key} {shape} {dtype}")
        try:
            self.zf.write_record(record, storage, nbytes)
        except (OSError, RuntimeError) as exc:
            raise layout.write_error(self.path, exc) from None
        self.next += 1

    def finish(self, fsync: bool) -> None:
        if self.next != len(self.expected):
            raise CheckpointError(f"{self.path}: internal error: {self.next} of {len(self.expected)} tensors written")
        try:
            opener, self._opener = self._opener, None
            opener.__exit__(None, None, None)
            if fsync:
                with open(self.tmp, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
        except (OSError, RuntimeError) as exc:
            raise layout.write_error(self.path, exc) from None

    def abort(self) -> None:
        """Drop an unfinished file (a no-op after :meth:`finish`)."""
        if self._opener is not None:
            opener, self._opener, self.zf = self._opener, None, None
            try:  # finalizes the writer: its destructor would otherwise retry a failing write and abort
                opener.__exit__(None, None, None)
            except (OSError, RuntimeError):
                pass
        self.tmp.unlink(missing_ok=True)


def arch_from_args(args: dict) -> ModelArch | None:
    """The ModelArch recorded by mindr1 in ``args['mindr1_arch']`` (None for other writers)."""
    data = args.get("mindr1_arch")
    if not data:
        return None
    names = {f.name for f in dataclasses.fields(ModelArch)}
    return build(ModelArch, {k: v for k, v in data.items() if k in names}, prefix="args.mindr1_arch")


class MegatronCheckpoint:
    """Lazy HF-named view of ``root`` (``latest_checkpointed_iteration.txt`` + ``mp_rank_*`` shards)."""

    def __init__(self, root: str | Path, arch: ModelArch | None = None, iteration: int | str | None = None):
        self.root = Path(root)
        self.iteration = layout.read_latest(self.root) if iteration is None else iteration
        self.tp, self.pp = self._discover()
        first = self._load(0, 0)
        self.args = layout.checkpoint_args(first)
        del first
        if arch is not None and self.args.get("padded_vocab_size"):
            # A Megatron-LM checkpoint: the HF config gives the true vocabulary, args the padding.
            arch = arch.replace(padded_vocab_size=int(self.args["padded_vocab_size"]))
        self.arch = arch or arch_from_args(self.args)
        if self.arch is None:
            raise CheckpointError(f"{self._path(0, 0)}: args carry no 'mindr1_arch'; pass --hf-config-dir "
                                  "with the model's HF config.json")
        self.num_layer_list = self._check_shapes()
        self.ranges = A.pp_layer_ranges(self.arch.num_layers, self.pp, self.num_layer_list)
        self._cache: tuple[int, dict] | None = None

    def _path(self, t: int, p: int) -> Path:
        return layout.shard_path(self.root, self.iteration, t, p, self.pp)

    def _discover(self) -> tuple[int, int]:
        it_dir = self.root / layout.iteration_dir_name(self.iteration)
        if not it_dir.is_dir():
            raise CheckpointError(f"{it_dir}: not found (named by {self.root / layout.LATEST})")
        ranks = [m.groups() for m in (_RANK_DIR.match(d.name) for d in it_dir.iterdir()) if m]
        if not ranks:
            raise CheckpointError(f"{it_dir}: no mp_rank_* folders")
        tp = 1 + max(int(t) for t, _ in ranks)
        pp = 1 + max(int(p or 0) for _, p in ranks)
        missing = [str(self._path_for(it_dir, t, p, pp)) for p in range(pp) for t in range(tp)
                   if not self._path_for(it_dir, t, p, pp).is_file()]
        if missing:
            raise CheckpointError(f"{it_dir}: TP={tp} x PP={pp} layout is missing {missing[:3]}")
        return tp, pp

    @staticmethod
    def _path_for(it_dir: Path, t: int, p: int, pp: int) -> Path:
        name = f"mp_rank_{t:02d}" if pp == 1 else f"mp_rank_{t:02d}_{p:03d}"
        return it_dir / name / layout.SHARD_FILE

    def _load(self, t: int, p: int) -> dict:
        state = layout.load_shard(self._path(t, p), mmap=True)
        if not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{self._path(t, p)}: no 'model' state dict")
        return state

    def _model(self, t: int, p: int) -> dict:
        model = A.from_te_names(self._load(t, p)["model"])
        return {k: v for k, v in model.items() if not k.endswith("_extra_state")}

    def _check_shapes(self) -> list[int] | None:
        """Every shard's keys and shapes against the arch; returns the layers per stage (None when even)."""
        counts = [len({int(m.group(1)) for m in map(_LAYER.match, self._model(0, p)) if m}) for p in range(self.pp)]
        if sum(counts) != self.arch.num_layers:
            raise CheckpointError(f"{self.root}: stages hold {counts} layers (sum {sum(counts)}) but the config "
                                  f"has num_layers={self.arch.num_layers}")
        layer_list = None if len(set(counts)) == 1 else counts
        for p in range(self.pp):
            want = A.mcore_expected_shapes(self.arch, self.tp, p, self.pp, layer_list)
            for t in range(self.tp):
                shapes = {k: tuple(v.shape) for k, v in self._model(t, p).items()}
                missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
                if missing or extra:
                    raise CheckpointError(f"{self._path(t, p)}: keys do not match the config: missing "
                                          f"{missing[:3]}, unexpected {extra[:3]}")
                for k, shape in want.items():
                    if shapes[k] != shape:
                        raise CheckpointError(f"{self._path(t, p)}: tensor {k} has shape {shapes[k]} but the "
                                              f"config implies {shape}")
        return layer_list

    # ------------------------------------------------------------------ the lazy HF view

    @property
    def names(self) -> list[str]:
        return list(A.hf_expected_shapes(self.arch))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return A.hf_expected_shapes(self.arch)

    def dtypes(self) -> dict[str, torch.dtype]:
        """The dtype of every HF tensor this view returns, from TP rank 0's shard of each stage."""
        out = {}
        for p in range(self.pp):
            model = self._model(0, p)
            for local, layer in enumerate(self.ranges[p]):
                for rule in A.layer_rules(self.arch):
                    for k in rule.hf:
                        out[A.HF_LAYER.format(layer) + k] = model[A.MCORE_LAYER.format(local) + rule.mcore].dtype
            if p == 0:
                out[A.HF_EMBED] = model[A.MC_EMBED].dtype
            if p == self.pp - 1:
                out[A.HF_NORM] = model[A.MC_NORM].dtype
                if not self.arch.tie_word_embeddings:
                    out[A.HF_LM_HEAD] = model[A.MC_OUTPUT].dtype
            del model
        return {n: out[n] for n in self.names}

    def _stage_of(self, layer: int) -> tuple[int, int]:
        for p, r in enumerate(self.ranges):
            if layer in r:
                return p, layer - r.start
        raise CheckpointError(f"{self.root}: no stage holds layer {layer}")

    def _layer(self, layer: int) -> dict[str, torch.Tensor]:
        """HF layer ``layer`` gathered from its stage's TP shards; the last one is kept."""
        if self._cache is None or self._cache[0] != layer:
            self._cache = None
            p, local = self._stage_of(layer)
            prefix = A.MCORE_LAYER.format(local)
            shards = []
            for t in range(self.tp):
                shards.append({k[len(prefix):]: v for k, v in self._model(t, p).items() if k.startswith(prefix)})
            self._cache = (layer, A.mcore_layer_to_hf(self.arch, shards))
        return self._cache[1]

    def _vocab_source(self, name: str) -> tuple[int, str]:
        if name == A.HF_EMBED:
            return 0, A.MC_EMBED
        if name == A.HF_LM_HEAD and not self.arch.tie_word_embeddings:
            return self.pp - 1, A.MC_OUTPUT
        raise CheckpointError(f"{self.root}: no vocabulary tensor named {name}")

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of the unpadded embedding / lm_head, reading only the shards holding them."""
        p, key = self._vocab_source(name)
        if not 0 <= start <= stop <= self.arch.vocab_size:
            raise CheckpointError(f"{name}: rows [{start}, {stop}) outside vocab_size {self.arch.vocab_size}")
        block = self.arch.padded_vocab(self.tp) // self.tp
        out = None
        for t in range(start // block, (stop - 1) // block + 1 if stop > start else 0):
            rows = self._model(t, p)[key]  # memory-mapped; copied straight into ``out``, then unmapped
            if out is None:
                out = torch.empty(stop - start, rows.shape[1], dtype=rows.dtype)
            lo, hi = max(start, t * block), min(stop, (t + 1) * block)
            out[lo - start: hi - start] = rows[lo - t * block: hi - t * block]
            del rows
        return out if out is not None else torch.empty(0, self.arch.hidden_size)

    def __call__(self, name: str) -> torch.Tensor:
        if name in (A.HF_EMBED, A.HF_LM_HEAD):
            return self.get_rows(name, 0, self.arch.vocab_size)
        if name == A.HF_NORM:
            return self._model(0, self.pp - 1)[A.MC_NORM].clone()
        if name.startswith("model.layers."):
            layer, _, rel = name[len("model.layers."):].partition(".")
            hf = self._layer(int(layer))
            if rel in hf:
                return hf[rel]
        raise CheckpointError(f"{self.root}: no tensor named {name}")

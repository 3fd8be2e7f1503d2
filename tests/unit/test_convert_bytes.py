"""The streaming converters write the same bytes as the buffered path they replaced (issue 19).

Megatron shards are compared with ``torch.save`` of the whole rank state dict (the pre-change
writer); HF exports with recorded sha256 sums of the pre-change output of a seeded random model,
and the streaming safetensors writer with ``safetensors.torch.save_file`` on mixed dtypes.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from mindr1.checkpoint import hf_io, layout, mcore_io
from mindr1.checkpoint.convert import main
from mindr1.checkpoint.synthetic import write_random_hf_checkpoint
from mindr1.models import adapter as A
from mindr1.models.arch import ModelArch

# sha256 of the files the pre-change code wrote for the conversions in _convert_all (torch 2.13, safetensors 0.8).
RECORDED = {
    "back": {"model-00001-of-00004.safetensors": "0e43246e6c1b7985821fbd7c749fef86a1e84ac876a8555f513624dc5ba4aa8a",
             "model-00002-of-00004.safetensors": "8daaa3aa8bc29b7cf252e8980002abcca1e1fddff5aea8414d2090302c9db39d",
             "model-00003-of-00004.safetensors": "0ebbd27760894d51f435c60c86caf2443316e93965ccb5801bdd51767c24f0b7",
             "model-00004-of-00004.safetensors": "b74d0a5428643588001341461b7bea72c57d252731a9f7ef103e9a6e4b7ca84d",
             "model.safetensors.index.json": "7259bbfb3ad3f4c27b312b683af00ac823db137b8b2b9d98f774a7deddf5e712"},
    "back32": {"model.safetensors": "b6483afb8cb0cebfff6f6c99065c7a37e9ac8685ceed0f3f0098c334fffe13e6"},
    "back2": {"model-00001-of-00007.safetensors": "841782e296e130dd35b1b2796359b63f52a303ce2a2287a7b9272c787f1c0b57",
              "model-00004-of-00007.safetensors": "96cf26138bf3ce8d9d39893f2a0e037e51108bc276c3bf211df7d09c61155adc",
              "model-00007-of-00007.safetensors": "0fe20fe6049314d2f0ac559201f473f5716883f8381eece24e600b7224991212",
              "model.safetensors.index.json": "07ec8e40c39a982744e09a6207f821f3fa7a0ecf177d033f7bc0a65ab9ef7f94"},
    "backl": {"model.safetensors": "028b549a3691da65c26ec9d4b55a2f25b16cd05604d7f5dd9a29e1ecddcda3a2"},
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _convert(src: Path, dst: Path, load: str, save: str, *extra: str) -> Path:
    assert main(["--load-model-type", load, "--save-model-type", save, "--load-dir", str(src), "--save-dir",
                 str(dst), "--no-fsync", *extra]) == 0
    return dst


def _reference_shards(hf_dir: Path, mg_dir: Path, tp: int, pp: int, tmp: Path, layers=None, dtype=None) -> None:
    """Each streamed shard equals, byte for byte, torch.save of the rank's state dict with the same args."""
    arch = ModelArch.from_hf_config(hf_dir)
    get_hf, _ = A.open_hf_checkpoint(hf_dir)
    for p in range(pp):
        for t in range(tp):
            path = layout.shard_path(mg_dir, "release", t, p, pp)
            args = layout.load_shard(path)["args"]
            arch_t = mcore_io.arch_from_args(args)
            model = A.mcore_rank_state_dict_from_hf(arch_t, get_hf, t, tp, p, pp, layers, dtype)
            ref = tmp / f".{layout.SHARD_FILE}.tmp-0"  # same base name: torch names the zip archive after it
            torch.save({"model": model, "iteration": 0, "checkpoint_version": layout.CHECKPOINT_VERSION,
                        "args": args}, ref)
            assert path.read_bytes() == ref.read_bytes(), path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("bytes")
    hf = write_random_hf_checkpoint(root / "hf", ModelArch.from_yaml("tiny-qwen2"), torch.bfloat16, seed=1,
                                    max_shard_bytes=150_000)
    hfl = write_random_hf_checkpoint(root / "hfl", ModelArch.from_yaml("tiny-llama"), torch.float32, seed=2)
    tp2pp2 = ("--target-tensor-parallel-size", "2", "--target-pipeline-parallel-size", "2")
    out = {"root": root, "hf": hf, "hfl": hfl}
    out["mg"] = _convert(hf, root / "mg", "hf", "mg", *tp2pp2)
    out["back"] = _convert(out["mg"], root / "back", "mg", "hf", "--max-shard-size", "100KB")
    out["back32"] = _convert(out["mg"], root / "back32", "mg", "hf", "--params-dtype", "fp32")
    out["mg2"] = _convert(hf, root / "mg2", "hf", "mg", *tp2pp2, "--num-layer-list", "1,3", "--params-dtype", "fp32",
                          "--padded-vocab-size", "320")
    out["back2"] = _convert(out["mg2"], root / "back2", "mg", "hf", "--params-dtype", "bf16", "--max-shard-size", "60KB")
    out["mgl"] = _convert(hfl, root / "mgl", "hf", "mg", *tp2pp2)
    out["backl"] = _convert(out["mgl"], root / "backl", "mg", "hf")
    return out


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_hf_export_bytes_equal_pre_change_output(converted, name):
    for file, digest in RECORDED[name].items():
        assert _sha(converted[name] / file) == digest, f"{name}/{file}"


def test_megatron_shards_equal_torch_save_of_rank_state(converted, tmp_path):
    _reference_shards(converted["hf"], converted["mg"], 2, 2, tmp_path)
    _reference_shards(converted["hf"], converted["mg2"], 2, 2, tmp_path, [1, 3], torch.float32)
    _reference_shards(converted["hfl"], converted["mgl"], 2, 2, tmp_path)  # tied: output layer on the last stage


def test_reshard_equals_torch_save(converted, tmp_path):
    mg13 = _convert(converted["mg"], tmp_path / "mg13", "mg", "mg", "--target-pipeline-parallel-size", "4")
    _reference_shards(converted["hf"], mg13, 1, 4, tmp_path)


def test_streaming_safetensors_equals_save_file(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = [("model.layers.10.w", torch.randn(7, 3, generator=gen).to(torch.bfloat16)),
               ("model.layers.2.w", torch.randn(5, generator=gen).to(torch.float16)),
               ("a.bias", torch.randn(3, generator=gen).double()),
               ("model.norm.weight", torch.randn(11, generator=gen)),
               ("lm_head.weight", torch.randn(4, 6, generator=gen).to(torch.bfloat16)),
               ("z", torch.randn(2, 2, generator=gen).to(torch.float16))]
    plan = [(n, tuple(t.shape), t.dtype) for n, t in tensors]
    assert hf_io.can_stream(plan)
    for max_bytes in (10**6, 64, 1):
        a, b = tmp_path / f"a{max_bytes}", tmp_path / f"b{max_bytes}"
        a.mkdir(), b.mkdir()
        wa = hf_io.write_hf_safetensors(a, iter(tensors), max_bytes)
        wb = hf_io.write_hf_streaming(b, plan, iter(tensors), max_bytes, fsync=True)
        assert wa == wb
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for f in a.iterdir():
            assert f.read_bytes() == (b / f.name).read_bytes(), f.name
            assert f.stat().st_mode == (b / f.name).stat().st_mode


def test_streaming_safetensors_refuses_a_tensor_off_plan(tmp_path):
    plan = [("a", (2,), torch.float32), ("b", (3,), torch.float32)]
    with pytest.raises(layout.CheckpointError, match="internal error"):
        hf_io.write_hf_streaming(tmp_path, plan, iter([("a", torch.zeros(2)), ("b", torch.zeros(4))]), 10**6)
    assert list(tmp_path.iterdir()) == []  # no partial file left

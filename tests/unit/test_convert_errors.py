"""Every bad conversion input fails with a message naming the problem, and writes nothing."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from mindr1.checkpoint import layout
from mindr1.checkpoint.convert import main
from mindr1.checkpoint.synthetic import write_random_hf_checkpoint
from mindr1.models.arch import ModelArch


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    hf = write_random_hf_checkpoint(root / "hf", ModelArch.from_yaml("tiny-qwen2"), seed=2)
    assert main(["--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(hf), "--save-dir",
                 str(root / "mg"), "--target-tensor-parallel-size", "2", "--target-pipeline-parallel-size", "2",
                 "--no-fsync"]) == 0
    return root


@pytest.fixture
def hf(sources, tmp_path):
    return Path(shutil.copytree(sources / "hf", tmp_path / "in_hf"))


@pytest.fixture
def mg(sources, tmp_path):
    return Path(shutil.copytree(sources / "mg", tmp_path / "in_mg"))


def _fails(capsys, src: Path, load: str, save: str, *extra: str, match: str, out: Path | None = None):
    out = out or src.parent / "out"
    before = sorted(p.name for p in out.parent.iterdir())
    code = main(["--load-model-type", load, "--save-model-type", save, "--load-dir", str(src),
                 "--save-dir", str(out), "--no-fsync", *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert match in err, err
    assert sorted(p.name for p in out.parent.iterdir()) == before, "a failed conversion left files behind"


def test_missing_load_dir(capsys, tmp_path):
    _fails(capsys, tmp_path / "nope", "hf", "mg", match="not a directory", out=tmp_path / "out")


def test_missing_weights(capsys, hf):
    (hf / "model.safetensors").unlink()
    _fails(capsys, hf, "hf", "mg", match="no model.safetensors, model.safetensors.index.json")


def test_missing_config(capsys, hf):
    (hf / "config.json").unlink()
    _fails(capsys, hf, "hf", "mg", match="config.json not found")


def test_corrupt_config(capsys, hf):
    (hf / "config.json").write_text("{not json")
    _fails(capsys, hf, "hf", "mg", match="not valid JSON")


def test_truncated_safetensors(capsys, hf):
    path = hf / "model.safetensors"
    os.truncate(path, path.stat().st_size // 2)
    _fails(capsys, hf, "hf", "mg", match="model.safetensors: unreadable safetensors file")


def test_config_does_not_match_tensors(capsys, hf):
    cfg = json.loads((hf / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (hf / "config.json").write_text(json.dumps(cfg))
    _fails(capsys, hf, "hf", "mg", match="model.layers.0.mlp.gate_proj.weight has shape (128, 64) but the config "
                                         "implies (96, 64)")


@pytest.mark.parametrize("tp,extra,match", [
    (3, [], "TP=3 does not divide num_attention_heads=4"),
    (4, [], "TP=4 does not divide num_query_groups (KV heads)=2"),
    (2, ["--padded-vocab-size", "301"], "padded_vocab_size 301 is not divisible by TP=2"),
])
def test_tp_does_not_divide(capsys, hf, tp, extra, match):
    _fails(capsys, hf, "hf", "mg", "--target-tensor-parallel-size", str(tp), *extra, match=match)


def test_tp_does_not_divide_ffn(capsys, tmp_path):
    hf = write_random_hf_checkpoint(tmp_path / "hf", ModelArch.from_yaml("tiny-qwen2").replace(ffn_hidden_size=129))
    _fails(capsys, hf, "hf", "mg", "--target-tensor-parallel-size", "2", match="TP=2 does not divide ffn_hidden_size=129")


@pytest.mark.parametrize("pp,extra,match", [
    (3, [], "PP=3 does not divide num_layers=4"),
    (2, ["--num-layer-list", "1,2"], "num_layer_list [1, 2] sums to 3 but the model has 4 layers"),
    (2, ["--num-layer-list", "1,x"], "expected comma-separated ints"),
])
def test_pp_does_not_divide(capsys, hf, pp, extra, match):
    _fails(capsys, hf, "hf", "mg", "--target-pipeline-parallel-size", str(pp), *extra, match=match)


def test_unknown_family(capsys, hf):
    _fails(capsys, hf, "hf", "mg", "--model-type-hf", "gpt2", match="unknown model family 'gpt2'")
    cfg = json.loads((hf / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (hf / "config.json").write_text(json.dumps(cfg))
    _fails(capsys, hf, "hf", "mg", match="model_type 'gpt2' is not a supported family")


class NotAllowed:
    """A global Megatron checkpoints never contain: unpickling it could run code."""


def test_unreadable_pickle(capsys, mg):
    path = layout.shard_path(mg, "release", 1, 1, 2)
    state = torch.load(path, weights_only=True)
    state["args"] = NotAllowed()
    torch.save(state, path)
    _fails(capsys, mg, "mg", "hf", match="mp_rank_01_001/model_optim_rng.pt: refused to unpickle")


def test_corrupt_megatron_shard(capsys, mg):
    path = layout.shard_path(mg, "release", 0, 1, 2)
    os.truncate(path, path.stat().st_size // 3)
    _fails(capsys, mg, "mg", "mg", match="mp_rank_00_001/model_optim_rng.pt: corrupt or truncated")


def test_missing_megatron_shard(capsys, mg):
    shutil.rmtree(layout.shard_dir(mg, "release", 1, 0, 2))
    _fails(capsys, mg, "mg", "hf", match="layout is missing")
    (mg / layout.LATEST).unlink()
    _fails(capsys, mg, "mg", "hf", match="latest_checkpointed_iteration.txt: not found")


def test_megatron_shard_does_not_match_config(capsys, mg):
    path = layout.shard_path(mg, "release", 0, 0, 2)
    state = layout.load_shard(path)
    state["model"]["decoder.layers.1.mlp.linear_fc2.weight"] = torch.zeros(64, 32)
    torch.save(state, path)
    _fails(capsys, mg, "mg", "hf", match="decoder.layers.1.mlp.linear_fc2.weight has shape (64, 32) but the config "
                                         "implies (64, 64)")


def test_existing_output_needs_force(capsys, hf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    _fails(capsys, hf, "hf", "mg", match="exists and is not empty; pass --force", out=out)
    assert (out / "keep.txt").exists()
    # --force replaces a previous output, never a file the converter did not write
    _fails(capsys, hf, "hf", "mg", "--force", match="holds files this tool did not write (keep.txt)", out=out)
    assert (out / "keep.txt").read_text() == "x"
    (out / "keep.txt").unlink()
    argv = ["--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(hf), "--save-dir", str(out),
            "--no-fsync"]
    assert main(argv) == 0
    assert main(argv + ["--target-tensor-parallel-size", "2", "--force"]) == 0
    assert layout.read_latest(out) == "release" and layout.shard_path(out, "release", 1, 0, 1).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_dir_is_load_dir(capsys, mg):
    _fails(capsys, mg, "mg", "mg", "--force", match="is the --load-dir", out=mg)


def test_megatron_lm_checkpoint_needs_hf_config(capsys, mg, hf, tmp_path):
    """Checkpoints written by Megatron-LM carry a Namespace without mindr1's arch: the HF config supplies it."""
    import argparse
    for path in sorted(mg.rglob(layout.SHARD_FILE)):
        state = layout.load_shard(path)
        args = {k: v for k, v in state["args"].items() if k not in ("mindr1_arch", "hf_config", "hf_dir")}
        state["args"] = argparse.Namespace(**args)
        torch.save(state, path)
    _fails(capsys, mg, "mg", "hf", match="args carry no 'mindr1_arch'; pass --hf-config-dir")
    out = tmp_path / "hf_out"
    assert main(["--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(mg), "--save-dir", str(out),
                 "--hf-config-dir", str(hf), "--no-fsync"]) == 0
    from safetensors.torch import load_file
    a, b = load_file(hf / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)

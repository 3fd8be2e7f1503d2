"""Megatron checkpoint layout I/O: names, the latest marker, atomic saves, safe loads."""
from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch

from mindr1.checkpoint import layout
from mindr1.checkpoint.layout import CheckpointError


def test_shard_names(tmp_path):
    assert layout.shard_dir(tmp_path, "release", 1, 0, 1) == tmp_path / "release" / "mp_rank_01"
    assert layout.shard_dir(tmp_path, 1200, 0, 3, 4) == tmp_path / "iter_0001200" / "mp_rank_00_003"
    assert layout.shard_path(tmp_path, 5, 2, 1, 2).relative_to(tmp_path).as_posix() == \
        "iter_0000005/mp_rank_02_001/model_optim_rng.pt"
    with pytest.raises(CheckpointError, match="non-negative int"):
        layout.shard_dir(tmp_path, -1, 0, 0, 1)


def test_latest_round_trip(tmp_path):
    layout.write_latest(tmp_path, 300)
    assert layout.read_latest(tmp_path) == 300
    layout.write_latest(tmp_path, "release")
    assert layout.read_latest(tmp_path) == "release"
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout.LATEST]
    (tmp_path / layout.LATEST).write_text("garbage")
    with pytest.raises(CheckpointError, match="expected 'release' or an iteration number, found 'garbage'"):
        layout.read_latest(tmp_path)


def test_megatron_lm_style_shard_loads(tmp_path):
    """Megatron-LM pickles args as a Namespace (dtypes, enums) and numpy RNG state."""
    from megatron.core.enums import ModelType
    from megatron.core.transformer.enums import AttnBackend
    args = argparse.Namespace(tensor_model_parallel_size=2, params_dtype=torch.bfloat16,
                              attention_backend=AttnBackend.auto, model_type=ModelType.encoder_or_decoder)
    rng = {"random_rng_state": random.getstate(), "np_rng_state": np.random.get_state(),
           "torch_rng_state": torch.get_rng_state()}
    state = {"model": {"w": torch.arange(4.)}, "args": args, "rng_state": [rng], "iteration": 7,
             "checkpoint_version": 3.0}
    path = layout.shard_path(tmp_path, 7, 0, 0, 1)
    layout.save_shard(path, state)
    assert [p.name for p in path.parent.iterdir()] == [layout.SHARD_FILE]
    loaded = layout.load_shard(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(4.))
    assert layout.checkpoint_args(loaded)["attention_backend"] is AttnBackend.auto
    assert loaded["rng_state"][0]["np_rng_state"][1].dtype == np.uint32


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="x.pt: not found"):
        layout.load_shard(tmp_path / "x.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: expected a dict, found list"):
        layout.load_shard(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.pt: corrupt or truncated"):
        layout.load_shard(tmp_path / "junk.pt")
    torch.save({"args": _Custom()}, tmp_path / "custom.pt")
    with pytest.raises(CheckpointError, match="custom.pt: refused to unpickle.*_Custom"):
        layout.load_shard(tmp_path / "custom.pt")


class _Custom:
    pass


def test_load_model_shard_checks_topology(tmp_path):
    args = {"tensor_model_parallel_size": 2, "pipeline_model_parallel_size": 2}
    layout.save_shard(layout.shard_path(tmp_path, "release", 1, 1, 2), {"model": {"w": torch.ones(2)}, "args": args})
    layout.write_latest(tmp_path, "release")
    assert torch.equal(layout.load_model_shard(tmp_path, 1, 2, 1, 2)["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match="written for TP=2, PP=2 but loading with TP=4, PP=2"):
        layout.load_model_shard(tmp_path, 1, 4, 1, 2)

"""Checkpoint retention and failures of the one checkpointer (mindr1.training.checkpointing).

A single-process gloo group and a tiny torch module are enough: ``save``/``load`` are plain file I/O
around the rank's state. keep_last_n deletes only what the trainer wrote; a save that hits a full
disk leaves no temporary file and the previous checkpoint loadable.
"""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from _small_fs import small_fs
from mindr1.accelerator import get_accelerator
from mindr1.checkpoint import layout
from mindr1.config import ConfigError, load_config
from mindr1.parallel.launch import free_port
from mindr1.training import checkpointing
from mindr1.training.config import SFTConfig


@pytest.fixture(scope="module")
def ctx():
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield SimpleNamespace(topology=SimpleNamespace(pp=1), tp_rank=0, pp_rank=0, dp_rank=0,
                          accelerator=get_accelerator("cpu"))
    if created:  # a group another module's fixture made (with megatron's groups on it) stays for that module
        dist.destroy_process_group()


def _save(root: Path, it: int, ctx, model, **keep) -> Path:
    return checkpointing.save(root, it, ctx, model, None, None, {"tensor_model_parallel_size": 1}, {"it": it},
                              timeout_s=60, **keep)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_keep_last_n_keeps_two_and_latest_and_never_foreign_files(ctx, tmp_path):
    root = tmp_path / "save"
    model = torch.nn.Linear(4, 4)
    # Things the trainer did not write: a converted release, a note, an iter_ folder with a user file.
    (root / "release" / "mp_rank_00").mkdir(parents=True)
    (root / "release" / "mp_rank_00" / "model_optim_rng.pt").write_bytes(b"converted")
    (root / "notes.txt").write_text("mine")
    (root / "iter_0000000").mkdir()
    (root / "iter_0000000" / "README").write_text("user file")
    before = _tree(root)
    for it in range(1, 6):
        _save(root, it, ctx, model, keep_last_n=2)
    assert layout.iterations(root) == [0, 4, 5] and layout.read_latest(root) == 5
    after = _tree(root)
    assert {k: after[k] for k in before} == before, "a file the trainer did not write changed"
    assert checkpointing.load(root, ctx, model, None, None)["train_state"] == {"it": 5}


def test_keep_every_n_and_the_save_total_limit_alias(ctx, tmp_path):
    cfg = load_config(SFTConfig, overrides=["save_total_limit=1", "keep_every_n=2"])
    assert cfg.keep_last_n == 1
    with pytest.raises(ConfigError, match="keep_last_n .3. and its alias save_total_limit .1. disagree"):
        load_config(SFTConfig, overrides=["save_total_limit=1", "keep_last_n=3"])
    model = torch.nn.Linear(2, 2)
    for it in range(1, 6):
        _save(tmp_path, it, ctx, model, keep_last_n=cfg.keep_last_n, keep_every_n=cfg.keep_every_n)
    assert layout.iterations(tmp_path) == [2, 4, 5]


def _no_temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name]


def test_disk_full_save_leaves_no_temp_file_and_previous_checkpoint_loadable(ctx, tmp_path, monkeypatch):
    root = tmp_path / "fs"
    model = torch.nn.Linear(400, 400)  # 640 kB of weights: one checkpoint fits in 1 MB, two do not
    with small_fs(root, "1m") as mounted:
        _save(root, 1, ctx, model)
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            model.weight.add_(1.0)
        if not mounted:  # no tmpfs: torch's zip writer fails the way it does on a full disk
            real = torch.save

            def full(obj, f, *a, **k):
                real({"partial": torch.zeros(10)}, f)
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5056 vs 4950")
            monkeypatch.setattr(torch, "save", full)
            monkeypatch.setattr(layout, "write_error", _as_full(layout.write_error))
        with pytest.raises(layout.CheckpointError, match=r"iter_0000002/mp_rank_00/model_optim_rng.pt: cannot "
                                                          r"write: no space left on device"):
            _save(root, 2, ctx, model)
        assert _no_temp_files(root) == []
        assert layout.read_latest(root) == 1
        state = checkpointing.load(root, ctx, model, None, None)
        assert state["iteration"] == 1 and all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())

        # write_latest on a completely full disk: an error naming the file, no temp file, latest unchanged
        if mounted:
            filler = root / "filler"
            with open(filler, "wb") as fh, pytest.raises(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        else:
            monkeypatch.setattr(os, "fsync", _raise(OSError(errno.ENOSPC, "No space left on device")))
        with pytest.raises(layout.CheckpointError, match="latest_checkpointed_iteration.txt: cannot write: no space"):
            layout.write_latest(root, 2)
        assert _no_temp_files(root) == [] and layout.read_latest(root) == 1


def _raise(exc):
    def fail(*_a, **_k):
        raise exc
    return fail


def _as_full(write_error):
    """Without a real full disk, report the injected failure as the file system would."""
    def diagnose(path, exc):
        return write_error(path, OSError(errno.ENOSPC, "No space left on device") if isinstance(exc, RuntimeError)
                           else exc)
    return diagnose


def test_files_and_folders_are_fsynced_before_latest_moves(ctx, tmp_path, monkeypatch):
    events = []
    real_fsync_dir, real_replace = layout.fsync_dir, os.replace
    monkeypatch.setattr(layout, "fsync_dir", lambda d: (events.append(("fsync_dir", Path(d))), real_fsync_dir(d)))
    monkeypatch.setattr(layout.os, "replace", lambda a, b: (events.append(("rename", Path(b))), real_replace(a, b)))
    _save(tmp_path, 3, ctx, torch.nn.Linear(2, 2))
    shard = layout.shard_path(tmp_path, 3, 0, 0, 1)
    latest = events.index(("rename", tmp_path / layout.LATEST))
    assert events.index(("fsync_dir", shard.parent)) < latest, events
    assert events[latest + 1] == ("fsync_dir", tmp_path), "the rename of latest is not made durable"


def test_a_stale_iteration_folder_with_foreign_files_is_not_replaced(ctx, tmp_path):
    (tmp_path / "iter_0000007").mkdir()
    (tmp_path / "iter_0000007" / "mine.txt").write_text("x")
    with pytest.raises(layout.CheckpointError, match="iter_0000007: holds files the trainer did not write"):
        _save(tmp_path, 7, ctx, torch.nn.Linear(2, 2))
    assert (tmp_path / "iter_0000007" / "mine.txt").read_text() == "x"

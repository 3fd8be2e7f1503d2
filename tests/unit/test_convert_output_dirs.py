"""The converter never deletes or changes a file it did not write, and says why it stops.

Each data-loss case of issue 18: a --save-dir that is a parent of --load-dir, a symlinked
--save-dir, a mount point, an index naming files outside the model directory; plus I/O failures
(full or read-only disk), hostile pickles and legacy pytorch_model.bin input.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _small_fs import small_fs
from mindr1.checkpoint import layout, staging
from mindr1.checkpoint.convert import main
from mindr1.checkpoint.synthetic import write_random_hf_checkpoint
from mindr1.models.arch import ModelArch


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_random_hf_checkpoint(tmp_path_factory.mktemp("src") / "hf", ModelArch.from_yaml("tiny-qwen2"), seed=3)


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links not followed) -> sha256, and every link -> its target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _convert(load: Path, save: Path, *extra: str, kind=("hf", "mg")) -> int:
    return main(["--load-model-type", kind[0], "--save-model-type", kind[1], "--load-dir", str(load),
                 "--save-dir", str(save), "--no-fsync", *extra])


def test_force_refuses_a_parent_of_the_load_dir(source, tmp_path, capsys):
    par = tmp_path / "par"
    shutil.copytree(source, par / "src")
    (par / "unrelated.txt").write_text("keep me")
    before = _tree(par)
    assert _convert(par / "src", par, "--force") == 1
    assert "contains the --load-dir" in capsys.readouterr().err
    assert _convert(par / "src", par / "src" / "out", "--force") == 1
    assert "is inside the --load-dir" in capsys.readouterr().err
    assert _tree(par) == before


def test_force_replaces_only_a_previous_output(source, tmp_path, capsys):
    out = tmp_path / "out"
    assert _convert(source, out) == 0
    (out / "iter_0000001").mkdir()
    (out / "iter_0000001" / "notes.md").write_text("user's")
    before = _tree(tmp_path)
    assert _convert(source, out, "--force") == 1
    assert "did not write (iter_0000001/notes.md)" in capsys.readouterr().err
    assert _tree(tmp_path) == before


def test_symlinked_save_dir_is_resolved(source, tmp_path, capsys):
    real, link = tmp_path / "disk" / "real", tmp_path / "link"
    assert _convert(source, real) == 0
    (tmp_path / "disk" / "sibling.txt").write_text("x")
    link.symlink_to(real, target_is_directory=True)
    assert _convert(source, link, "--force", "--target-tensor-parallel-size", "2") == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert layout.shard_path(real, "release", 1, 0, 1).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "link"]
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["real", "sibling.txt"], "a .old entry was left"
    # a link to a directory of someone else's files is refused like the directory itself
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_bytes(b"\1\2")
    (tmp_path / "link2").symlink_to(other)
    before = _tree(tmp_path)
    assert _convert(source, tmp_path / "link2", "--force") == 1
    assert _tree(tmp_path) == before


def test_mount_point_is_written_in_place(source, tmp_path, monkeypatch):
    parent = tmp_path / "parent"
    mnt = parent / "mnt"
    (parent / "beside.txt").parent.mkdir(parents=True)
    (parent / "beside.txt").write_text("x")
    with small_fs(mnt, "16m") as mounted:
        if not mounted:  # no tmpfs: the converter sees a mount point all the same
            real = os.path.ismount
            monkeypatch.setattr(staging.os.path, "ismount", lambda p: Path(p) == mnt.resolve() or real(p))
        (mnt / "lost+found").mkdir()  # an ext4 mount's own folder: neither in the way nor touched
        (mnt / "lost+found" / "#123").write_bytes(b"fsck")
        assert _convert(source, mnt) == 0
        assert _convert(source, mnt, "--force", "--save-model-type", "hf", kind=("hf", "hf")) == 0
        assert sorted(p.name for p in parent.iterdir()) == ["beside.txt", "mnt"], "output orphaned in the parent"
        assert sorted(p.name for p in mnt.iterdir() if p.name.startswith(".")) == []
        assert (mnt / "lost+found" / "#123").read_bytes() == b"fsck"
        assert not (mnt / layout.LATEST).exists(), "the previous output was not replaced"
        a, b = load_file(source / "model.safetensors"), load_file(mnt / "model.safetensors")
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
        del a, b


@pytest.mark.parametrize("entry", ["/etc/passwd", "../outside.safetensors", "sub/../../x.safetensors"])
def test_index_may_only_name_files_inside_the_model_dir(source, tmp_path, capsys, entry):
    hf = Path(shutil.copytree(source, tmp_path / "hf"))
    (tmp_path / "outside.safetensors").write_bytes((hf / "model.safetensors").read_bytes())
    names = list(load_file(hf / "model.safetensors"))
    index = {"metadata": {}, "weight_map": {n: "model.safetensors" for n in names}}
    index["weight_map"][names[0]] = entry
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    assert _convert(hf, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"weight_map['{names[0]}'] = '{entry}' does not name a file inside" in err, err
    assert not (tmp_path / "out").exists()


def _fs_error(monkeypatch, mounted: bool, errno_: int):
    if not mounted:  # no tmpfs: every write in the output folder fails as the file system would
        real_open = open

        def failing_open(file, mode="r", *a, **k):
            if "w" in mode or "a" in mode:
                raise OSError(errno_, os.strerror(errno_), str(file))
            return real_open(file, mode, *a, **k)
        monkeypatch.setattr("builtins.open", failing_open)
        monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: failing_open(f, "wb"))


def test_full_disk_names_path_and_cause(source, tmp_path, capsys, monkeypatch):
    mnt = tmp_path / "mnt"
    with small_fs(mnt, "64k") as mounted:
        _fs_error(monkeypatch, mounted, 28)
        assert _convert(source, mnt / "out") == 1
        err = capsys.readouterr().err
        assert "cannot write: no space left on device" in err and str(mnt / "out") in err, err
        assert "unexpected pos" not in err
        assert list(mnt.iterdir()) == []


def test_read_only_disk_names_path_and_cause(source, tmp_path, capsys, monkeypatch):
    mnt = tmp_path / "ro"
    with small_fs(mnt, "1m", read_only=True) as mounted:
        _fs_error(monkeypatch, mounted, 30)
        assert _convert(source, mnt / "out") == 1
        err = capsys.readouterr().err
        assert "read-only file system" in err and str(mnt / "out") in err, err


class _Shell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_malicious_pickle_is_refused_not_called_corrupt(source, tmp_path, capsys):
    out = tmp_path / "mg"
    assert _convert(source, out) == 0
    path = layout.shard_path(out, "release", 0, 0, 1)
    state = torch.load(path, weights_only=True)
    state["args"] = _Shell()
    torch.save(state, path)
    assert _convert(out, tmp_path / "hf", kind=("mg", "hf")) == 1
    err = capsys.readouterr().err
    assert "refused to unpickle: it needs the global posix.system" in err, err
    assert "corrupt" not in err


@pytest.mark.parametrize("legacy_format", [True, False])
def test_pytorch_model_bin_is_accepted(source, tmp_path, legacy_format):
    tensors = load_file(source / "model.safetensors")
    hf = tmp_path / "bin"
    hf.mkdir()
    for f in ("config.json", "generation_config.json"):
        if (source / f).exists():
            shutil.copy(source / f, hf / f)
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"pytorch_model-00001-of-00002.bin": names[:half], "pytorch_model-00002-of-00002.bin": names[half:]}
    if legacy_format:  # torch < 1.6 pickles (not zip), one file
        torch.save(tensors, hf / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    else:  # sharded, with pytorch_model.bin.index.json
        for file, part in shards.items():
            torch.save({n: tensors[n] for n in part}, hf / file)
        weight_map = {n: f for f, part in shards.items() for n in part}
        (hf / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert _convert(source, tmp_path / "ref") == 0
    assert _convert(hf, tmp_path / "out") == 0
    a = layout.load_shard(layout.shard_path(tmp_path / "ref", "release", 0, 0, 1))["model"]
    b = layout.load_shard(layout.shard_path(tmp_path / "out", "release", 0, 0, 1))["model"]
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flag,value", [("--make-vocab-size-divisible-by", "0"), ("--max-shard-size", "0"),
                                        ("--target-tensor-parallel-size", "0"), ("--target-pipeline-parallel-size", "-1"),
                                        ("--padded-vocab-size", "0")])
def test_nonsense_flags_are_refused(source, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        _convert(source, tmp_path / "out", flag, value)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: '{value}' is out of range; expected >= 1" in err, err
    assert not (tmp_path / "out").exists()


def test_architecture_recorded_in_a_checkpoint_is_range_checked(source, tmp_path, capsys):
    out = tmp_path / "mg"
    assert _convert(source, out) == 0
    path = layout.shard_path(out, "release", 0, 0, 1)
    state = torch.load(path, weights_only=True)
    state["args"]["mindr1_arch"]["num_attention_heads"] = 0
    torch.save(state, path)
    assert _convert(out, tmp_path / "hf", kind=("mg", "hf")) == 1
    assert "args.mindr1_arch.num_attention_heads: 0 is out of range; expected >= 1" in capsys.readouterr().err

"""An output directory written completely or not at all, never at the cost of files mindr1 did not write.

:func:`staged_output` builds the output under a temporary name and moves it into place only when
the body succeeds. Its rules, each one a way data was lost before:

* ``--save-dir`` is resolved through symlinks first: the real directory is written and the link
  keeps pointing at it (no ``.old`` link is left behind);
* it may not equal, contain or lie inside ``--load-dir`` (``--force`` included);
* ``--force`` replaces only an output of the same tool (every entry matches ``is_ours``); anything
  else in the directory is reported and nothing is touched;
* a mount point cannot be renamed, and its parent is another file system: the output is staged
  inside it (``SAVE/.NAME.tmp-*``) and moved into place entry by entry.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from mindr1.checkpoint.layout import CheckpointError, write_error


def _relation(save: Path, load: Path) -> str | None:
    if save == load:
        return "is"
    if save in load.parents:
        return "contains"
    if load in save.parents:
        return "is inside"
    return None


def foreign_entries(root: Path, is_ours: Callable[[Path, bool], bool]) -> list[Path]:
    """Entries under ``root`` (symlinks not followed) that ``is_ours(relative path, is_dir)`` rejects."""
    foreign = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in list(dirnames):
            rel = (here / name).relative_to(root)
            if (here / name).is_symlink() or not is_ours(rel, True):
                foreign.append(rel)
                dirnames.remove(name)
        for name in filenames:
            rel = (here / name).relative_to(root)
            if (here / name).is_symlink() or not is_ours(rel, False):
                foreign.append(rel)
    return sorted(foreign)


_LOST_FOUND = "lost+found"  # fsck's folder at the root of an ext* mount: not ours, never moved


def _entries(folder: Path) -> list[Path]:
    mount = os.path.ismount(folder)
    return [p for p in folder.iterdir() if not (mount and p.name == _LOST_FOUND)]


def check_output_dir(save_dir: Path, load_dir: Path, force: bool, is_ours: Callable[[Path, bool], bool]) -> Path:
    """Validate ``save_dir`` before anything is read or written; returns it with symlinks resolved."""
    save, load = save_dir.resolve(), load_dir.resolve()
    relation = _relation(save, load)
    if relation is not None:
        raise CheckpointError(f"--save-dir {save_dir} {relation} the --load-dir {load_dir}; write to a directory "
                              "outside it (--force never replaces the input)")
    if save.exists() and not save.is_dir():
        raise CheckpointError(f"--save-dir {save_dir} exists and is not a directory; nothing was changed")
    if save.is_dir() and _entries(save):
        if not force:
            raise CheckpointError(f"--save-dir {save_dir} exists and is not empty; pass --force to replace it")
        foreign = [p for p in foreign_entries(save, is_ours) if str(p) != _LOST_FOUND or not os.path.ismount(save)]
        if foreign:
            shown = ", ".join(str(p) for p in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise CheckpointError(f"--save-dir {save_dir} holds files this tool did not write ({shown}); --force "
                                  "replaces only a previous output. Move them away or choose another directory")
    return save


def _private_dir(parent: Path, prefix: str, target: Path) -> Path:
    try:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError as exc:
        raise write_error(target, exc) from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary directory
    return tmp


def _swap(tmp: Path, save: Path) -> None:
    """Replace ``save`` (absent, empty, or a previous output) by ``tmp``, restoring it on failure."""
    if not save.exists():
        os.rename(tmp, save)
        return
    old = save.with_name(f".{save.name}.old-{os.getpid()}")
    os.rename(save, old)
    try:
        os.rename(tmp, save)
    except OSError:
        os.rename(old, save)
        raise
    shutil.rmtree(old)


def _move_entries_in(tmp: Path, save: Path) -> None:
    """``save`` is a mount point: park its previous output in a folder inside it, move ``tmp``'s entries up."""
    old = _private_dir(save, f".{save.name}.old-", save)
    previous = [p for p in _entries(save) if p not in (tmp, old)]
    for p in previous:
        os.rename(p, old / p.name)
    moved = []
    try:
        for p in list(tmp.iterdir()):
            os.rename(p, save / p.name)
            moved.append(save / p.name)
    except OSError:
        for p in moved:
            os.rename(p, tmp / p.name)
        for p in previous:
            os.rename(old / p.name, p)
        old.rmdir()
        raise
    tmp.rmdir()
    shutil.rmtree(old)


@contextlib.contextmanager
def staged_output(save_dir: Path, force: bool, load_dir: Path,
                  is_ours: Callable[[Path, bool], bool]) -> Iterator[Path]:
    """A temporary directory renamed onto ``save_dir`` only when the body succeeds."""
    save = check_output_dir(save_dir, load_dir, force, is_ours)
    mount = save.is_dir() and os.path.ismount(save)
    try:
        if not mount:
            save.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(save, exc) from None
    tmp = _private_dir(save if mount else save.parent, f".{save.name}.tmp-", save)
    try:
        yield tmp
        (_move_entries_in if mount else _swap)(tmp, save)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(save, exc) from None
    except CheckpointError as exc:  # name the output the user asked for, not the temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(str(exc).replace(str(tmp), str(save))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

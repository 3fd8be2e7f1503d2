"""A small real file system for disk-full and read-only tests: a tmpfs mounted when we may (root),
otherwise a plain folder, and the caller injects the error instead."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path


@contextlib.contextmanager
def small_fs(path: Path, size: str = "1m", read_only: bool = False):
    """Yield True with a tmpfs of ``size`` mounted at ``path`` (read-only if asked), else False."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if read_only else ""), "tmpfs", str(path)],
        capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted and subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=True)  # a file is still mapped

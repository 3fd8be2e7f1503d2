"""GRPO's held-out accuracy at a saved step equals ``mindr1 eval`` of that checkpoint with the same settings.

Tiny GRPO run (tiny random Llama with SmolLM2's tokenizer, real-tokenised arithmetic prompts, one
step, checkpoint at step 1); then ``mindr1 eval`` of the saved Megatron checkpoint on the same
held-out rows rendered with the same template, greedy, the same new-token limit. The logged
figures (accuracy, format rate, response length, truncated share) and every completion text must
be equal: same scoring code, same prompts, same weights.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import test_grpo as G  # noqa: E402  (its data and run helpers)

EVAL_SAMPLES, NEW_TOKENS = 8, 16


def test_grpo_heldout_accuracy_equals_mindr1_eval_of_the_checkpoint(tmp_path, smollm2_dir):
    from mindr1.models.arch import load_arch

    rows = G.arithmetic_rows(tmp_path / "test.jsonl", 16, 2)
    data = (G.preprocess_prompts(G.arithmetic_rows(tmp_path / "train.jsonl", 32, 1), tmp_path / "train", smollm2_dir),
            G.preprocess_prompts(rows, tmp_path / "test", smollm2_dir),
            G.random_hf_checkpoint(load_arch("tiny-smol"), tmp_path / "tiny_hf", seed=0))
    save = tmp_path / "run"
    G.run_grpo(save, data, "training.train_iters=1", "training.save_interval=1", f"training.eval_samples={EVAL_SAMPLES}",
               "training.plot=false", f"actor_rollout_ref.actor_rollout.max_response_length={NEW_TOKENS}")
    logged = G.step_metrics(save)[1]
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == "1"

    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "mindr1.cli", "eval", "--model", f"grpo={save}", "--tokenizer", str(smollm2_dir),
           "--benchmarks", f"jsonl:{rows}", "--limit", str(EVAL_SAMPLES), "--prompt-type", "smollm_r1_zero",
           "--templates-file", "configs/rlxf/templates_r1_zero.json", "--temperature", "0",
           "--max-new-tokens", str(NEW_TOKENS), "--max-prompt-length", "128", "--engine", "hf", "--no-progress"]
    # one thread, as the GRPO rollout worker runs (cpu_threads_per_worker: 1)
    proc = subprocess.run(cmd + ["--output-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads((out / "results.json").read_text())["results"]["grpo"][f"jsonl:{rows}"]
    assert got["pass@1"] == pytest.approx(logged["eval/acc"], abs=1e-9)
    assert got["pass@1"] == pytest.approx(logged["eval/pass@1"], abs=1e-9)
    assert got["format_rate"] == pytest.approx(logged["eval/format"], abs=1e-9)
    assert got["response_length_mean"] == pytest.approx(logged["eval/response_length"], abs=1e-9)
    assert got["truncated_frac"] == pytest.approx(logged["eval/truncated_frac"], abs=1e-9)
    offline = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    online = [json.loads(line) for line in (save / "eval" / "step_0000001.jsonl").read_text().splitlines()]
    assert len(offline) == len(online) == EVAL_SAMPLES
    assert [s["response"] for s in offline] == [s["response"] for s in online]
    assert [(s["answer"], s["correct"], s["formatted"], s["tokens"]) for s in offline] == \
        [(s["answer"], s["correct"], s["formatted"], s["tokens"]) for s in online]

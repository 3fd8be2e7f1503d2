"""``mindr1 eval`` end to end on real SmolLM2-135M-Instruct and real GSM8K test questions.

- greedy on the first 32 questions, the HF engine gives exactly the per-item correctness (and the
  tokens) of an independent loop: plain transformers ``generate`` + math-verify;
- a run SIGKILLed half-way and restarted writes the same results.json and samples.jsonl;
- the model converted to a Megatron checkpoint at TP=3 PP=2 evaluates to the same numbers
  as its HF source (both in one side-by-side run, which also draws results.png);
- bad input stops before any generation with a message naming the flag, file or key.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "Solve the problem. End your reply with a line '#### N' where N is the final number."
N_QUESTIONS, NEW_TOKENS, BATCH = 32, 16, 8


def eval_cmd(model, out: Path, *extra: str, questions: int = N_QUESTIONS, tokens: int = NEW_TOKENS) -> list[str]:
    models = []
    for m in (model if isinstance(model, list) else [model]):
        models += ["--model", str(m)]
    return [sys.executable, "-m", "mindr1.cli", "eval", *models, "--benchmarks", "gsm8k", "--limit", str(questions),
            "--apply-chat-template", "--system-prompt", SYSTEM, "--max-new-tokens", str(tokens), "--engine", "hf",
            "--batch-size", str(BATCH), "--output-dir", str(out), "--save-token-ids", "--no-progress", *extra]


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")


def run_eval(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env())
    assert proc.returncode == 0, f"eval failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, smollm2_dir):
    out = tmp_path_factory.mktemp("eval") / "full"
    run_eval(eval_cmd(smollm2_dir, out))
    return out


def independent_loop(model_dir: Path) -> list[dict]:
    """Plain transformers: chat template, left-padded batches, greedy generate, math-verify on the answer."""
    import torch
    from math_verify import parse, verify
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mindr1.artifacts import gsm8k_path
    from mindr1.rl.rewards.answers import extract_final_answer, extract_gsm8k_answer

    tok = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rows = [json.loads(line) for line in gsm8k_path("test").read_text().splitlines()[:N_QUESTIONS]]
    out = []
    for start in range(0, len(rows), BATCH):
        chunk = rows[start:start + BATCH]
        texts = [tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["question"]}],
                                         tokenize=False, add_generation_prompt=True) for r in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.eos_token_id)
        for row, ids in zip(chunk, gen[:, enc["input_ids"].shape[1]:].tolist()):
            if tok.eos_token_id in ids:
                ids = ids[:ids.index(tok.eos_token_id) + 1]
            text = tok.decode(ids[:-1] if ids[-1] == tok.eos_token_id else ids)
            gold = extract_gsm8k_answer(row["answer"])
            pred = extract_final_answer(text)
            correct = pred is not None and bool(verify(parse("\\boxed{" + gold + "}"), parse("\\boxed{" + pred + "}")))
            out.append({"token_ids": ids, "correct": correct, "answer": pred})
    return out


def test_hf_engine_matches_plain_transformers_and_math_verify(full_run, smollm2_dir):
    got = samples(full_run)
    want = independent_loop(smollm2_dir)
    assert len(got) == len(want) == N_QUESTIONS
    assert [s["token_ids"] for s in got] == [w["token_ids"] for w in want]
    assert [s["answer"] for s in got] == [w["answer"] for w in want]
    assert [s["correct"] for s in got] == [w["correct"] for w in want]
    results = json.loads((full_run / "results.json").read_text())
    m = results["results"][smollm2_dir.name]["gsm8k"]
    assert m["pass@1"] == pytest.approx(sum(w["correct"] for w in want) / N_QUESTIONS)
    assert m["n_items"] == N_QUESTIONS and results["benchmarks"]["gsm8k"]["n_items"] == N_QUESTIONS
    assert "| gsm8k |" in (full_run / "results.md").read_text()


def test_sigkill_half_way_then_resume_gives_the_same_results(full_run, smollm2_dir, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(eval_cmd(smollm2_dir, out), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    partial = out / "samples.partial.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            lines = partial.read_text().count("\n") if partial.exists() else 0
            if lines >= 1 + BATCH:  # header + at least one complete chunk
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "results.json").exists()
    done = partial.read_text().count("\n") - 1
    assert BATCH <= done < N_QUESTIONS
    run_eval(eval_cmd(smollm2_dir, out))
    assert not partial.exists()
    assert (out / "results.json").read_text() == (full_run / "results.json").read_text()
    assert (out / "samples.jsonl").read_text() == (full_run / "samples.jsonl").read_text()


def test_megatron_tp3_pp2_checkpoint_evaluates_like_its_hf_source(smollm2_dir, tmp_path):
    mg = tmp_path / "mg"
    conv = subprocess.run([sys.executable, "tools/convert_ckpt.py", "--load-model-type", "hf", "--save-model-type", "mg",
                           "--load-dir", str(smollm2_dir), "--save-dir", str(mg), "--target-tensor-parallel-size", "3",
                           "--target-pipeline-parallel-size", "2", "--no-fsync"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env())
    assert conv.returncode == 0, conv.stderr[-3000:]
    assert (mg / "release" / "mp_rank_02_001" / "model_optim_rng.pt").exists()
    out = tmp_path / "side_by_side"
    run_eval(eval_cmd([f"hf={smollm2_dir}", f"mg={mg}"], out, questions=4, tokens=12))
    results = json.loads((out / "results.json").read_text())
    assert results["models"]["mg"]["kind"] == "megatron"
    assert results["results"]["mg"] == results["results"]["hf"]
    by_model = {}
    for s in samples(out):
        by_model.setdefault(s["model"], []).append((s["token_ids"], s["answer"], s["correct"]))
    assert by_model["mg"] == by_model["hf"] and len(by_model["hf"]) == 4
    assert (out / "results.png").stat().st_size > 5_000


@pytest.mark.parametrize("extra, message", [
    (["--benchmarks", "gsm9k"], "unknown benchmark 'gsm9k'; known: aime24, amc23, gsm8k, math500"),
    (["--n-samples", "0"], "--n-samples must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be > 0"),
])
def test_bad_flags_stop_before_generation(tmp_path, smollm2_dir, extra, message):
    out = tmp_path / "bad"
    proc = subprocess.run(eval_cmd(smollm2_dir, out, *extra), cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env())
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "results.json").exists() and not (out / "samples.partial.jsonl").exists()


def test_bad_model_directories(tmp_path):
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text("{}")
    no_args = tmp_path / "no_args"
    (no_args / "release" / "mp_rank_00").mkdir(parents=True)
    (no_args / "latest_checkpointed_iteration.txt").write_text("release")
    import torch

    torch.save({"model": {}}, no_args / "release" / "mp_rank_00" / "model_optim_rng.pt")
    for model, message in ((no_tok, "no tokenizer in"), (tmp_path, "has no config.json"),
                           (no_args, "args carry no 'mindr1_arch'")):
        proc = subprocess.run([sys.executable, "-m", "mindr1.cli", "eval", "--model", str(model), "--benchmarks",
                               "gsm8k", "--output-dir", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env=env())
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr

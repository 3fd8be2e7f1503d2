"""``mindr1 generate`` refuses an --output-path that would replace one of its inputs, and nonsense sampling flags."""
from __future__ import annotations

import pytest

from mindr1.sampling import generate


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "run", lambda opts: pytest.fail("generation started"))
    (tmp_path / "data.jsonl").write_text('{"prompt": "1+1", "gt_answer": "2"}\n')
    (tmp_path / "model").mkdir()
    (tmp_path / "ckpt.hf").mkdir()
    return tmp_path


@pytest.mark.parametrize("args,message", [
    (["--pretrain", "{d}/model", "--output-path", "{d}/data.jsonl"], "would replace the --dataset input"),
    (["--pretrain", "{d}/model", "--output-path", "{d}/model"], "is a directory"),
    (["--load", "{d}/ckpt.hf", "--output-path", "{d}/ckpt.jsonl"], "would replace the --load input"),
])
def test_output_path_never_replaces_an_input(inputs, args, message):
    before = (inputs / "data.jsonl").read_bytes()
    with pytest.raises(SystemExit, match=message):
        generate.main(["--dataset", str(inputs / "data.jsonl")] + [a.format(d=inputs) for a in args])
    assert (inputs / "data.jsonl").read_bytes() == before


@pytest.mark.parametrize("flag,value,expected", [("--temperature", "-1", ">= 0"), ("--top-p", "1.5", "in (0, 1]"),
                                                 ("--top-p", "nan", "in (0, 1]")])
def test_sampling_flags_are_range_checked(inputs, capsys, flag, value, expected):
    with pytest.raises(SystemExit):
        generate.main(["--pretrain", str(inputs / "model"), "--dataset", str(inputs / "data.jsonl"),
                       "--output-path", str(inputs / "out.jsonl"), flag, value])
    assert f"argument {flag}: '{value}' is out of range; expected {expected}" in capsys.readouterr().err

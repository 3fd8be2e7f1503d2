"""Invalid rows: the run stops naming file, line and reason (no output at all), or skips and counts them."""
import json
import os

import pytest

from mindr1.artifacts import qwen25_tokenizer_dir
from mindr1.data.datasets import InstructionDataset, read_summary
from mindr1.data.preprocess import main

GOOD = [{"instruction": f"What is {i} + {i}?", "output": f"{2 * i}"} for i in range(6)]
BAD = {
    "malformed_json": b'{"instruction": "x", "output": \n',
    "missing_key": json.dumps({"instruction": "What?"}).encode() + b"\n",
    "wrong_type": json.dumps({"instruction": ["a", "list"], "output": "y"}).encode() + b"\n",
    "empty_field": json.dumps({"instruction": "Why?", "output": "   "}).encode() + b"\n",
    "non_utf8": b'{"instruction": "caf\xe9", "output": "y"}\n',
}


def _write(tmp_path, bad_line: bytes):
    lines = [json.dumps(r).encode() + b"\n" for r in GOOD]
    lines.insert(3, bad_line)  # line 4
    path = tmp_path / "raw" / "data.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"".join(lines))
    return path


def _argv(path, out, *extra):
    return ["--input", str(path), "--output-prefix", str(out), "--handler-name", "AlpacaStyleInstructionHandler",
            "--prompt-type", "qwen", "--tokenizer-name-or-path", str(qwen25_tokenizer_dir()),
            "--no-progress-bar", "--chunk-size", "2", *extra]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("reason", sorted(BAD))
def test_stops_with_file_line_reason_and_leaves_nothing(tmp_path, capsys, reason, workers):
    path = _write(tmp_path, BAD[reason])
    out = tmp_path / "out"
    assert main(_argv(path, out / "ds", "--workers", workers)) == 1
    err = capsys.readouterr().err
    assert f"{path} line 4: {reason}:" in err and "--skip-invalid" in err
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize("reason", sorted(BAD))
def test_skip_invalid_counts_by_reason(tmp_path, reason):
    path = _write(tmp_path, BAD[reason])
    assert main(_argv(path, tmp_path / "ds", "--skip-invalid")) == 0
    summary = read_summary(str(tmp_path / "ds"))
    assert summary["skipped"] == {"total": 1, "by_reason": {reason: 1}}
    assert summary["samples"] == len(GOOD) == len(InstructionDataset(str(tmp_path / "ds")))


def test_messages_name_the_mapped_key(tmp_path, capsys):
    path = _write(tmp_path, BAD["missing_key"])
    assert main(_argv(path, tmp_path / "ds")) == 1
    assert "key 'output' (mapped from 'response') is missing" in capsys.readouterr().err


def test_failure_keeps_previous_output_untouched(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in GOOD))
    assert main(_argv(good, tmp_path / "ds")) == 0
    before = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path) if p.startswith("ds")}
    bad = _write(tmp_path, BAD["wrong_type"])
    assert main(_argv(bad, tmp_path / "ds", "--workers", "2")) == 1
    after = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path) if p.startswith("ds")}
    assert after == before


def test_bad_json_array_file_names_line(tmp_path, capsys):
    path = tmp_path / "rows.json"
    path.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}\n]\n')
    assert main(_argv(path, tmp_path / "ds", "--skip-invalid")) == 1
    assert f"{path} line 3" in capsys.readouterr().err
    assert [p for p in os.listdir(tmp_path) if p.startswith("ds")] == []

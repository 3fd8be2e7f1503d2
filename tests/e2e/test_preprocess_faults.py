"""Preprocessing under faults and odd input: a dead or stuck worker stops the run naming the chunk (no
hang, no temp files); a UTF-8 BOM is accepted; deep nesting is an invalid row; an empty input is an
error unless --allow-empty; a corrupt parquet/arrow file is named and leaves nothing behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mindr1.artifacts import qwen25_tokenizer_dir
from mindr1.data.datasets import read_summary
from mindr1.data.preprocess import main

ROOT = Path(__file__).resolve().parents[2]
ROWS = [{"instruction": f"What is {i} + {i}?", "output": f"{2 * i}"} for i in range(4)]


def _argv(path, out, *extra, handler="AlpacaStyleInstructionHandler"):
    return ["--input", str(path), "--output-prefix", str(out), "--handler-name", handler, "--prompt-type", "qwen",
            "--tokenizer-name-or-path", str(qwen25_tokenizer_dir()), "--no-progress-bar", *extra]


def _leftovers(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


# ---------------------------------------------------------------- dead and stuck workers


def _big_documents(path: Path, n: int = 4, words: int = 160_000) -> Path:
    # each line takes the tokenizer seconds, so a worker is caught in the middle of its chunk
    with open(path, "w") as fh:
        for d in range(n):
            fh.write(json.dumps({"text": "".join(f"w{d}x{i} and more. " for i in range(words))}) + "\n")
    return path


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
    data = _big_documents(tmp_path / "docs.jsonl")
    out = tmp_path / "out"
    cmd = [sys.executable, "tools/preprocess_data.py", *_argv(data, out / "ds", "--workers", "2", "--chunk-size", "1",
                                                              *extra, handler="GeneralPretrainHandler")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # the slower `tokenizers` backend: gigatoken finishes these documents before a worker
                            # can be caught in the middle of a chunk
                            env={**os.environ, "PYTHONPATH": str(ROOT), "MINDR1_TOKENIZER_BACKEND": "tokenizers"})
    return proc, data, out


def _busy_worker(proc: subprocess.Popen, timeout: float = 120) -> psutil.Process:
    """A pool worker in the middle of a chunk (it has used CPU time: idle workers wait on a pipe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for child in psutil.Process(proc.pid).children():
            try:
                if sum(child.cpu_times()[:2]) > 0.3:
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.05)
    raise AssertionError("no worker became busy")


def _finish(proc: subprocess.Popen, bound_s: float) -> str:
    try:
        _, err = proc.communicate(timeout=bound_s)  # bounded: the run must not hang
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err[-3000:]
    return err


def test_killed_worker_stops_the_run_naming_chunk_and_signal(tmp_path):
    proc, data, out = _start(tmp_path)
    worker = _busy_worker(proc)
    worker.send_signal(signal.SIGKILL)
    err = _finish(proc, 60)
    assert f"(pid {worker.pid}) died while processing {data} lines" in err, err[-3000:]
    assert "SIGKILL" in err and "Traceback" not in err
    assert _leftovers(out) == []


def test_stuck_worker_stops_the_run_at_the_chunk_deadline(tmp_path):
    proc, data, out = _start(tmp_path, "--chunk-timeout", "4")
    worker = _busy_worker(proc)
    worker.send_signal(signal.SIGSTOP)
    err = _finish(proc, 60)
    assert f"(pid {worker.pid}) did not finish {data} lines" in err and "within 4 s" in err, err[-3000:]
    assert _leftovers(out) == []
    _, alive = psutil.wait_procs([worker], timeout=20)
    assert not alive  # the stopped worker was killed, not left behind


# ---------------------------------------------------------------- input


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("name, body", [
    ("rows.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)),
    ("lines.json", b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)),
    ("array.json", json.dumps(ROWS, indent=1).encode()),
])
def test_utf8_bom_is_accepted_in_every_text_format(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(BOM + body)
    assert main(_argv(path, tmp_path / "ds")) == 0
    assert read_summary(str(tmp_path / "ds"))["samples"] == len(ROWS)


def _deep_row(depth: int = 5000) -> bytes:
    return b'{"instruction": ' + b"[" * depth + b"]" * depth + b', "output": "x"}\n'


@pytest.mark.parametrize("workers", ["1", "2"])
def test_deeply_nested_row_is_an_invalid_row(tmp_path, capsys, workers):
    lines = [json.dumps(r).encode() + b"\n" for r in ROWS]
    lines.insert(2, _deep_row())  # line 3
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"".join(lines))
    assert main(_argv(path, tmp_path / "out" / "ds", "--workers", workers)) == 1
    err = capsys.readouterr().err
    assert f"{path} line 3: too_deep:" in err and "--skip-invalid" in err
    assert _leftovers(tmp_path / "out") == []
    assert main(_argv(path, tmp_path / "ds", "--workers", workers, "--skip-invalid")) == 0
    summary = read_summary(str(tmp_path / "ds"))
    assert summary["skipped"] == {"total": 1, "by_reason": {"too_deep": 1}} and summary["samples"] == len(ROWS)


def test_deeply_nested_json_array_names_the_file(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" + json.dumps(ROWS[0]).encode() + b", " + _deep_row().strip()[:-1] + b"}]")
    assert main(_argv(path, tmp_path / "out" / "ds", "--skip-invalid")) == 1
    assert f"{path}: too_deep" in capsys.readouterr().err
    assert _leftovers(tmp_path / "out") == []


def test_input_without_rows_is_an_error_unless_allowed(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    assert main(_argv(path, tmp_path / "out" / "ds")) == 1
    err = capsys.readouterr().err
    assert f"no rows in {path}" in err and "--allow-empty" in err
    assert _leftovers(tmp_path / "out") == []
    assert main(_argv(path, tmp_path / "ds", "--allow-empty")) == 0
    assert read_summary(str(tmp_path / "ds"))["samples"] == 0


def _valid_table(path: Path, fmt: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(ROWS * 50)
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=10)
    return path.read_bytes()


@pytest.mark.parametrize("fmt, damage", [("parquet", "garbage"), ("parquet", "truncated"), ("arrow", "truncated")])
def test_corrupt_table_file_is_named_and_leaves_nothing(tmp_path, capsys, fmt, damage):
    path = tmp_path / f"rows.{fmt}"
    raw = _valid_table(path, fmt)
    path.write_bytes(b"not a table at all" * 10 if damage == "garbage" else raw[: len(raw) * 2 // 3])
    assert main(_argv(path, tmp_path / "out" / "ds", "--workers", "2", "--chunk-size", "10")) == 1
    err = capsys.readouterr().err
    assert f"{path}: cannot read as {fmt}" in err, err
    assert _leftovers(tmp_path / "out") == []


def _slow_sum(chunk):
    # the first chunk finishes last: the look-ahead fills up behind it, then everything is emitted at once
    time.sleep(0.5 if chunk.start == 0 else 0.01 * (len(chunk.rows) % 3))
    return chunk.start, sum(chunk.rows)


def test_pool_yields_every_chunk_in_input_order():
    from mindr1.data.pool import chunk_results
    from mindr1.data.sources import Chunk

    chunks = [Chunk("f", "row", i, rows=list(range(i % 5 + 1))) for i in range(23)]
    expected = [(c.start, sum(c.rows)) for c in chunks]
    assert list(chunk_results(_slow_sum, chunks, 2, 30)) == expected

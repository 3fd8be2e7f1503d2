"""tools/preprocess_data.py writes the same bytes as before issue 19's fast paths, with either tokenizer backend.

The sha256 sums were recorded from the pre-change code (commit cb22630) on the rows built below:
300 real GSM8K/MATH rows plus one row of specials, non-ASCII and whitespace runs.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from itertools import islice

import pytest

from mindr1.artifacts import gsm8k_path, math_path, qwen25_tokenizer_dir
from mindr1.data.preprocess import main
from mindr1.data.tokenizer import BACKEND_ENV

SFT = ["--handler-name", "AlpacaStyleInstructionHandler", "--map-keys", '{"prompt":"question","response":"answer"}',
       "--prompt-type", "qwen"]
RUNS = {"sft": SFT + ["--seq-length", "300"], "packed": SFT + ["--seq-length", "512", "--pack"],
        "pretrain": ["--map-keys", '{"text":["question","answer"]}']}
RECORDED = {
    "sft_packed_attention_mask_document.bin": "910d579825cf89d52073c272d8f10d204f56d8d2879786fb35c4aeb8a95b56ea",
    "sft_packed_input_ids_document.bin": "24d60546a96ac31bd808d64dcd148400b88c246db25351cb2f8005f4acdf3aba",
    "sft_packed_labels_document.bin": "e14573992b8c320228fc5318f5ad1814c024c92be83bd02ff0ad2121d8af37c9",
    "sft_packed_labels_document.idx": "02a43702f617a27136b59996146e6847fcaa67747757e9fe42f426e7ea205515",
    "packed_packed_attention_mask_document.bin": "210a731642cf0bfec3bf5c9455c68fd1e2d61a9c9665c725189ca04d12e0fa81",
    "packed_packed_input_ids_document.bin": "f717e5f3d25d82b47ae3b52c11206284d3ed69d084c489511b316b4c1e7722c9",
    "packed_packed_labels_document.bin": "eb0aaea21f6baa519572b964073003028835f6330416db5ed3e2ce031976baa5",
    "packed_packed_labels_document.idx": "fd4fedfdeac5fc56cc17e3e17a57ebd800cc7873f06c7693f8ca5566e03807aa",
    "pretrain_text_document.bin": "e87d929b1fba84223ca52ae3c59334d243f982d9983cdc2d599a353a51aac943",
    "pretrain_text_document.idx": "ef6a705dbb8948a733500a3b68ab2fba4d6858b44453e88e4cf26c7449008d70",
}
BACKENDS = ["tokenizers"] + (["gigatoken"] if importlib.util.find_spec("gigatoken") else [])


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory):
    rows = [json.loads(line) for line in islice(open(gsm8k_path("train"), encoding="utf-8"), 150)]
    rows += [{"question": r["problem"], "answer": r["solution"]}
             for r in map(json.loads, islice(open(math_path("train"), encoding="utf-8"), 150))]
    rows.append({"question": "caf\u00e9 \u4e2d\u6587 \U0001F600 <|im_end|> tabs\t\r\n end",
                 "answer": "  spaces  \n\n\n<think>x</think>"})
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_bytes_equal_pre_change_output(rows_file, tmp_path, monkeypatch, backend):
    monkeypatch.setenv(BACKEND_ENV, backend)
    for name, extra in RUNS.items():
        assert main(["--input", str(rows_file), "--output-prefix", str(tmp_path / name), "--tokenizer-name-or-path",
                     str(qwen25_tokenizer_dir()), "--no-progress-bar", "--workers", "2", *extra]) == 0
        summary = json.loads((tmp_path / f"{name}_summary.json").read_text())
        assert summary["tokenizer"]["backend"] == backend
    for file, digest in RECORDED.items():
        assert hashlib.sha256((tmp_path / file).read_bytes()).hexdigest() == digest, (backend, file)

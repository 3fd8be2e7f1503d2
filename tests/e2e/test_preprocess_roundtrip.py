"""raw -> .bin/.idx -> detokenize == the template rendering, for every handler, real Qwen2.5 tokenizer."""
import json
from itertools import islice

import numpy as np
import pytest

from mindr1.artifacts import gsm8k_path, math_path, qwen25_tokenizer_dir
from mindr1.data.datasets import InstructionDataset, PromptDataset, TextDataset, read_summary
from mindr1.data.preprocess import main
from mindr1.data.templates import render_prompt, render_segments
from mindr1.data.tokenizer import TextTokenizer

N = 200
ALPACA_KEYS = '{"prompt":"question","query":"","response":"answer","system":"","history":""}'


def _rows(path, n=N):
    with open(path) as fh:
        return [json.loads(line) for line in islice(fh, n)]


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer(qwen25_tokenizer_dir())


@pytest.fixture(scope="module")
def gsm(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(gsm8k_path("train"))))
    return path


def _run(*argv):
    assert main([*map(str, argv), "--tokenizer-name-or-path", str(qwen25_tokenizer_dir()), "--no-progress-bar"]) == 0


def _sft(gsm, out, *extra):
    _run("--input", gsm, "--output-prefix", out, "--handler-name", "AlpacaStyleInstructionHandler",
         "--map-keys", ALPACA_KEYS, "--prompt-type", "qwen", *extra)
    return InstructionDataset(str(out))


def test_alpaca_round_trip_and_prompt_mask(gsm, tmp_path, tok):
    ds = _sft(gsm, tmp_path / "sft", "--workers", "2", "--chunk-size", "37")
    rows = _rows(gsm)
    assert len(ds) == len(rows)
    for row, item in zip(rows, (ds[i] for i in range(len(ds)))):
        msgs = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        (prompt, _), (response, _) = render_segments("qwen", msgs, tok)
        assert tok.decode(item["input_ids"]) == prompt + response
        n_prompt = len(tok.encode(prompt))
        assert (item["labels"][:n_prompt] == -100).all()
        assert (item["labels"][n_prompt:] == item["input_ids"][n_prompt:]).all()
        assert tok.decode(item["labels"][n_prompt:]) == response
        assert (item["segment_ids"] == 1).all()
    _sft(gsm, tmp_path / "one", "--workers", "1")
    for name in ("input_ids", "labels", "attention_mask"):
        for ext in (".bin", ".idx"):
            a = (tmp_path / f"sft_packed_{name}_document{ext}").read_bytes()
            assert a == (tmp_path / f"one_packed_{name}_document{ext}").read_bytes()
    summary = read_summary(str(tmp_path / "sft"))
    assert summary["samples"] == N and summary["template"] == "qwen" and summary["skipped"]["total"] == 0


def test_megatron_reads_instruction_output(gsm, tmp_path):
    pytest.importorskip("torch")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ours = _sft(gsm, tmp_path / "sft")
    theirs = IndexedDataset(str(tmp_path / "sft_packed_labels_document"))
    assert len(theirs) == len(ours)
    for i in (0, 57, len(ours) - 1):
        np.testing.assert_array_equal(theirs[i], ours[i]["labels"])


def test_packing_keeps_every_sample(gsm, tmp_path):
    plain = _sft(gsm, tmp_path / "plain")
    packed = _sft(gsm, tmp_path / "packed", "--seq-length", "1024", "--pack", "--workers", "2")
    want = sorted((plain[i]["input_ids"].tobytes(), plain[i]["labels"].tobytes()) for i in range(len(plain)))
    got = []
    for i in range(len(packed)):
        item = packed[i]
        assert item["input_ids"].size == 1024
        seg = item["segment_ids"]
        assert (item["labels"][seg == 0] == -100).all()
        for k in range(1, seg.max() + 1):
            where = np.flatnonzero(seg == k)
            assert where.size and (np.diff(where) == 1).all()  # contiguous
            got.append((item["input_ids"][where].tobytes(), item["labels"][where].tobytes()))
    assert sorted(got) == want
    assert len(packed) < len(plain) / 2
    assert read_summary(str(tmp_path / "packed"))["packed_sequences"] == len(packed)


def test_truncation_policy_counts(gsm, tmp_path, tok):
    plain = _sft(gsm, tmp_path / "plain")
    cut = _sft(gsm, tmp_path / "cut", "--seq-length", "128")
    summary = read_summary(str(tmp_path / "cut"))
    longer = [plain[i] for i in range(len(plain)) if plain[i]["input_ids"].size > 128]
    no_room = sum((it["labels"][:128] == -100).all() for it in longer)
    assert summary["truncated"] == len(longer) - no_room > 0
    assert summary["dropped_too_long"] == no_room and len(cut) == N - no_room
    assert max(cut[i]["input_ids"].size for i in range(len(cut))) == 128


def test_r1_prompts_from_parquet_with_extra_keys(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(math_path("train"))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "math.parquet")
    _run("--input", f"parquet@{tmp_path}", "--output-prefix", tmp_path / "out" / "rl",
         "--handler-name", "R1AlpacaStyleInstructionHandler", "--prompt-type", "qwen_r1",
         "--map-keys", '{"prompt":"problem","query":"","response":"answer","system":"","history":""}',
         "--dataset-additional-keys", "labels", "subject", "--workers", "2")
    ds = PromptDataset(str(tmp_path / "out" / "rl"))
    assert len(ds) == N
    for row, item in zip(rows, (ds[i] for i in range(N))):
        assert tok.decode(item["prompt_ids"]) == render_prompt("qwen_r1", row["problem"], tok)
        assert item["ground_truth"] == row["answer"] and item["subject"] == row["subject"]


def test_sharegpt_masks_non_assistant_turns(gsm, tmp_path, tok):
    rows = _rows(gsm)
    convs = [{"system": "Be brief.", "conversations": [
        {"from": "human", "value": a["question"]}, {"from": "gpt", "value": a["answer"]},
        {"from": "human", "value": b["question"]}, {"from": "gpt", "value": b["answer"]}]}
        for a, b in zip(rows[::2], rows[1::2])]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(convs))  # a JSON array file
    _run("--input", path, "--output-prefix", tmp_path / "sg", "--handler-name", "SharegptStyleInstructionHandler",
         "--prompt-type", "chatml")
    ds = InstructionDataset(str(tmp_path / "sg"))
    assert len(ds) == len(convs)
    for conv, item in zip(convs, (ds[i] for i in range(len(ds)))):
        msgs = [{"role": "system", "content": conv["system"]}] + [
            {"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in conv["conversations"]]
        segs = render_segments("chatml", msgs, tok)
        assert tok.decode(item["input_ids"]) == "".join(t for t, _ in segs)
        pos = 0
        for text, trained in segs:
            n = len(tok.encode(text))
            span = item["labels"][pos:pos + n]
            assert (span == item["input_ids"][pos:pos + n]).all() if trained else (span == -100).all()
            pos += n
        assert pos == item["input_ids"].size


def test_pretrain_appends_eos_and_megatron_reads(tmp_path, tok):
    pytest.importorskip("torch")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    rows = _rows(math_path("train"), 100)
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _run("--input", path, "--output-prefix", tmp_path / "pt", "--map-keys", '{"text":["problem","solution"]}')
    ds = TextDataset(str(tmp_path / "pt"))
    for row, i in zip(rows, range(len(ds))):
        assert tok.decode(ds[i]) == row["problem"] + "\n" + row["solution"] + "<|im_end|>"
    theirs = IndexedDataset(str(tmp_path / "pt_text_document"))
    np.testing.assert_array_equal(theirs[5], ds[5])

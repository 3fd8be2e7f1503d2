"""The tokenizer wrapper: fast path == transformers' ids; sentencepiece models go through transformers."""
import importlib.util
import json
from itertools import islice

import numpy as np
import pytest

from mindr1.artifacts import gsm8k_path, qwen25_tokenizer_dir
from mindr1.data.preprocess import main
from mindr1.data.datasets import TextDataset
from mindr1.data.tokenizer import BACKEND_ENV, TextTokenizer


def _texts(n):
    with open(gsm8k_path("train")) as fh:
        return [json.loads(line)["question"] for line in islice(fh, n)]


BACKENDS = ["tokenizers"] + (["gigatoken"] if importlib.util.find_spec("gigatoken") else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_path_matches_transformers(backend, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv(BACKEND_ENV, backend)
    ours = TextTokenizer(qwen25_tokenizer_dir())
    hf = AutoTokenizer.from_pretrained(str(qwen25_tokenizer_dir()))
    texts = _texts(50) + ["<|im_start|>user\nhi<|im_end|>\n", "<think>\nx\n</think>", "", " ", "caf\u00e9 \U0001F600\r\n"]
    assert ours.backend == backend
    want = hf(texts, add_special_tokens=False)["input_ids"]
    assert ours.encode_batch(texts) == want
    flat, lengths = ours.encode_batch_flat(texts)
    assert flat.dtype == np.int32 and lengths.tolist() == [len(w) for w in want]
    assert flat.tolist() == [i for w in want for i in w]
    assert (ours.eos_token, ours.eos_id, ours.pad_id, ours.vocab_size) == ("<|im_end|>", 151645, 151643, len(hf))


def test_gigatoken_is_chosen_only_where_it_loads(monkeypatch):
    from mindr1.artifacts import smollm2_dir

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    want = "gigatoken" if "gigatoken" in BACKENDS else "tokenizers"
    assert TextTokenizer(qwen25_tokenizer_dir()).backend == want
    assert TextTokenizer(smollm2_dir()).backend == "tokenizers"  # gigatoken cannot read SmolLM2's byte map
    monkeypatch.setenv(BACKEND_ENV, "fastest")
    with pytest.raises(ValueError, match="MINDR1_TOKENIZER_BACKEND='fastest': expected one of auto, gigatoken"):
        TextTokenizer(qwen25_tokenizer_dir())
    monkeypatch.setenv(BACKEND_ENV, "gigatoken")
    with pytest.raises(ValueError, match="gigatoken"):
        TextTokenizer(smollm2_dir())


def test_sentencepiece_model_through_transformers(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    texts = _texts(300)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    tok = TextTokenizer(tmp_path)
    assert tok.backend.startswith("transformers") and tok.eos_id == 2
    raw = tmp_path / "rows.jsonl"
    raw.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:40]))
    assert main(["--input", str(raw), "--output-prefix", str(tmp_path / "pt"), "--tokenizer-name-or-path",
                 str(tmp_path), "--no-progress-bar", "--workers", "2"]) == 0
    ds = TextDataset(str(tmp_path / "pt"))
    assert len(ds) == 40
    for i in (0, 17, 39):
        assert ds[i][-1] == 2 and tok.decode(ds[i][:-1]).strip() == texts[i].strip()

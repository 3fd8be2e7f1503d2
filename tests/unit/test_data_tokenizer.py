"""The tokenizer wrapper: fast path == transformers' ids; sentencepiece models go through transformers."""
import json
from itertools import islice

import pytest

from mindr1.artifacts import gsm8k_path, qwen25_tokenizer_dir
from mindr1.data.preprocess import main
from mindr1.data.datasets import TextDataset
from mindr1.data.tokenizer import TextTokenizer


def _texts(n):
    with open(gsm8k_path("train")) as fh:
        return [json.loads(line)["question"] for line in islice(fh, n)]


def test_fast_path_matches_transformers():
    from transformers import AutoTokenizer

    ours = TextTokenizer(qwen25_tokenizer_dir())
    hf = AutoTokenizer.from_pretrained(str(qwen25_tokenizer_dir()))
    texts = _texts(50) + ["<|im_start|>user\nhi<|im_end|>\n", "<think>\nx\n</think>"]
    assert ours.backend == "tokenizers"
    assert ours.encode_batch(texts) == hf(texts, add_special_tokens=False)["input_ids"]
    assert (ours.eos_token, ours.eos_id, ours.vocab_size) == ("<|im_end|>", 151645, len(hf))


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

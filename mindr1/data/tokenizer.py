"""The tokenizer seen by preprocessing and the dataset readers (``--tokenizer-type PretrainedFromHF``).

Two backends behind one small interface (``encode_batch``, ``decode``, special-token strings/ids,
``chat_template``):

- a directory with ``tokenizer.json`` (every HF fast tokenizer) is loaded with the ``tokenizers``
  library directly: 0.1 s of imports instead of the seconds ``transformers`` takes, and batch
  encoding without building ``BatchEncoding`` objects;
- anything else (sentencepiece ``tokenizer.model``, slow tokenizers, a hub id) goes through
  ``transformers.AutoTokenizer``, imported only then.

Text is encoded without added special tokens: templates write BOS/EOS themselves.
"""
from __future__ import annotations

import json
from pathlib import Path


def _token_str(value) -> str | None:
    if isinstance(value, dict):  # older configs store {"content": "...", ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


class TextTokenizer:
    """A HF tokenizer loaded from ``path`` (a directory, or a hub id for the transformers backend)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        root = Path(path)
        config = _read_json(root / "tokenizer_config.json") if root.is_dir() else {}
        specials = _read_json(root / "special_tokens_map.json") if root.is_dir() else {}
        self._hf = None
        if (root / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(root / "tokenizer.json"))
            self.backend = "tokenizers"
        else:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(self.path)
            self.backend = f"transformers.{type(self._hf).__name__}"
        for name in ("bos_token", "eos_token", "pad_token"):
            value = _token_str(config.get(name)) or _token_str(specials.get(name))
            if value is None and self._hf is not None:
                value = _token_str(getattr(self._hf, name, None))
            setattr(self, name, value)
        self.chat_template = config.get("chat_template")
        if isinstance(self.chat_template, list):  # named templates: take the default one
            self.chat_template = next((t["template"] for t in self.chat_template if t.get("name") == "default"), None)
        jinja = root / "chat_template.jinja"
        if not self.chat_template and root.is_dir() and jinja.is_file():
            self.chat_template = jinja.read_text(encoding="utf-8")
        if not self.chat_template and self._hf is not None:
            self.chat_template = getattr(self._hf, "chat_template", None)
        self.eos_id = self.token_to_id(self.eos_token)
        self.bos_id = self.token_to_id(self.bos_token)
        pad = self.token_to_id(self.pad_token)
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)

    @property
    def vocab_size(self) -> int:
        if self._hf is not None:
            return len(self._hf)
        return self._fast.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        if self._hf is not None:
            return self._hf.convert_tokens_to_ids(token)
        return self._fast.token_to_id(token)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._hf is not None:
            return self._hf(texts, add_special_tokens=False)["input_ids"]
        return [enc.ids for enc in self._fast.encode_batch_fast(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return self._fast.decode(ids, skip_special_tokens=False)

    def describe(self) -> dict:
        return {"path": str(Path(self.path).resolve()) if Path(self.path).exists() else self.path,
                "backend": self.backend, "vocab_size": self.vocab_size, "eos_token": self.eos_token,
                "eos_id": self.eos_id, "bos_token": self.bos_token, "pad_id": self.pad_id}

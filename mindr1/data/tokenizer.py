"""The tokenizer seen by preprocessing and the dataset readers (``--tokenizer-type PretrainedFromHF``).

Three backends behind one small interface (``encode_batch``, ``encode_batch_flat``, ``decode``,
special-token strings/ids, ``chat_template``):

- a directory with a byte-level BPE ``tokenizer.json`` (GPT-2, Llama 3, Qwen, SmolLM) is encoded
  with ``gigatoken`` when it is installed (``pip install mindr1[fast-tokenizer]``): the same ids as
  ``tokenizers`` (tested on the real data sets), returned as one flat token buffer plus offsets, so
  a chunk of rows costs no Python object per token. ``MINDR1_TOKENIZER_BACKEND=tokenizers`` (or
  ``gigatoken``, which then must be installed) overrides the automatic choice;
- any other ``tokenizer.json`` (every HF fast tokenizer) is loaded with the ``tokenizers``
  library directly: 0.1 s of imports instead of the seconds ``transformers`` takes, and batch
  encoding without building ``BatchEncoding`` objects (it also serves ``decode`` and vocabulary
  look-ups of the gigatoken backend, loaded only when asked);
- anything else (sentencepiece ``tokenizer.model``, slow tokenizers, a hub id) goes through
  ``transformers.AutoTokenizer``, imported only then.

Text is encoded without added special tokens: templates write BOS/EOS themselves.
"""
from __future__ import annotations

import json
import os
from itertools import chain
from pathlib import Path

import numpy as np

BACKEND_ENV = "MINDR1_TOKENIZER_BACKEND"
_BACKENDS = ("auto", "gigatoken", "tokenizers")


def _backend_choice() -> str:
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in _BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={choice!r}: expected one of {', '.join(_BACKENDS)}")
    return choice


def _load_gigatoken(tokenizer_json: Path, required: bool):
    """gigatoken's byte-level BPE encoder for ``tokenizer_json``, or None (not installed / not byte-level BPE)."""
    try:
        import gigatoken
        from gigatoken.gigatoken_rs import BPETokenizer
    except ImportError:
        if required:
            raise ValueError(f"{BACKEND_ENV}=gigatoken but gigatoken is not installed "
                             "(pip install 'mindr1[fast-tokenizer]')") from None
        return None
    try:
        tok = gigatoken.Tokenizer(str(tokenizer_json))
    except Exception as exc:  # an unsupported tokenizer.json: the tokenizers backend reads it
        if required:
            raise ValueError(f"{tokenizer_json}: gigatoken cannot load it ({exc})") from None
        return None
    if not isinstance(tok.backend, BPETokenizer):
        if required:
            raise ValueError(f"{tokenizer_json}: not a byte-level BPE tokenizer; gigatoken is used only for those")
        return None
    return tok


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
        self._giga = None
        self._fast_tok = None
        if (root / "tokenizer.json").is_file():
            choice = _backend_choice()
            if choice != "tokenizers":
                self._giga = _load_gigatoken(root / "tokenizer.json", required=choice == "gigatoken")
            self.backend = "gigatoken" if self._giga is not None else "tokenizers"
            if self._giga is not None:
                self._giga.encode_batch([""], parallel=False)  # imports awkward here, once, not in each worker
            else:
                _ = self._fast  # loaded before any fork, as the encoder
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
    def _fast(self):
        """The ``tokenizers`` tokenizer (the encoder of that backend; decode and look-ups of gigatoken's)."""
        if self._fast_tok is None:
            from tokenizers import Tokenizer

            self._fast_tok = Tokenizer.from_file(str(Path(self.path) / "tokenizer.json"))
        return self._fast_tok

    @property
    def vocab_size(self) -> int:
        if self._hf is not None:
            return len(self._hf)
        if self._giga is not None:  # added tokens included, as tokenizers' with_added_tokens=True
            return self._giga.vocab_size
        return self._fast.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        if self._hf is not None:
            return self._hf.convert_tokens_to_ids(token)
        if self._giga is not None:  # a special token is one id of its own text; anything else asks tokenizers
            ids = self._giga.encode(token)
            if len(ids) == 1:
                return int(ids[0])
        return self._fast.token_to_id(token)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._hf is not None:
            return self._hf(texts, add_special_tokens=False)["input_ids"]
        if self._giga is not None:
            return self._giga.encode_batch_list(texts)
        return [enc.ids for enc in self._fast.encode_batch_fast(texts, add_special_tokens=False)]

    def encode_batch_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, lengths)``: every text's ids back to back as int32, and the number of ids of each (int64).

        With gigatoken the ids are its output buffer itself (no Python int per token)."""
        if self._giga is not None:
            layout = self._giga.encode_batch(texts).layout
            offsets = np.asarray(layout.offsets.data)
            flat = np.asarray(layout.content.data)[offsets[0]:offsets[-1]]
            return flat.view(np.int32) if flat.dtype == np.uint32 else flat.astype(np.int32), np.diff(offsets)
        pieces = self.encode_batch(texts)
        lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
        return np.fromiter(chain.from_iterable(pieces), np.int32, int(lengths.sum())), lengths

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

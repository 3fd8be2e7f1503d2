"""Prompts for generation: dataset rows (json / jsonl / parquet) -> rendered, tokenized prompts.

A bad row is reported by file and line (jsonl, 1-based) or row (json array, parquet, 0-based)
with the missing key, before any generation starts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


class PromptError(ValueError):
    """A dataset row or a flag does not give a usable prompt; the message says where."""


def load_rows(path: str | Path, max_samples: Optional[int] = None) -> list[dict]:
    """Rows of a .jsonl / .json (array or JSON lines) / .parquet file, each tagged with ``_where``."""
    path = Path(path)
    if not path.exists():
        raise PromptError(f"{path}: dataset not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = [dict(r, _where=f"{path}: row {i}") for i, r in enumerate(pq.read_table(path).to_pylist())]
    else:
        text = path.read_text()
        if text.lstrip().startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PromptError(f"{path}: not valid JSON: {exc}") from None
            rows = [_tagged(r, f"{path}: element {i}") for i, r in enumerate(data)]
        else:
            rows = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(_tagged(json.loads(line), f"{path}: line {lineno}"))
                except json.JSONDecodeError as exc:
                    raise PromptError(f"{path}: line {lineno}: not valid JSON: {exc}") from None
    return rows[:max_samples] if max_samples is not None else rows


def _tagged(row: Any, where: str) -> dict:
    if not isinstance(row, dict):
        raise PromptError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return dict(row, _where=where)


@dataclass
class PromptItem:
    index: int
    prompt: Any
    text: str
    input_ids: list[int]
    gt_answer: Any


class PromptSource:
    """Renders rows with ``--apply-chat-template``, a ``--prompt-type`` template, or as plain text."""

    def __init__(self, tokenizer, map_keys: dict, chat_template: bool, prompt_type: Optional[str],
                 prompt_max_len: int, dataset: str = "dataset"):
        if not isinstance(map_keys, dict) or "prompt" not in map_keys:
            raise PromptError(f'--map-keys must be a JSON object with a "prompt" key, got {map_keys!r}')
        unknown = set(map_keys) - {"prompt", "gt_answer", "system"}
        if unknown:
            raise PromptError(f"--map-keys: unknown field(s) {sorted(unknown)}; known: prompt, gt_answer, system")
        self.tokenizer, self.keys = tokenizer, map_keys
        self.chat_template, self.prompt_type, self.max_len = chat_template, prompt_type, prompt_max_len
        if prompt_type:
            from mindr1.data.templates import get_template

            get_template(prompt_type)  # an unknown name fails here, naming the known ones

    def _messages(self, row: dict) -> tuple[Any, list[dict]]:
        key = self.keys["prompt"]
        if key not in row:
            raise PromptError(f"{row['_where']}: no key {key!r} (--map-keys prompt); keys: "
                              f"{sorted(k for k in row if k != '_where')}")
        prompt = row[key]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        system_key = self.keys.get("system")
        if system_key and row.get(system_key):
            messages = [{"role": "system", "content": str(row[system_key])}] + messages
        return prompt, messages

    def render(self, messages: list[dict]) -> str:
        if self.prompt_type:
            from mindr1.data.templates import render_prompt

            return render_prompt(self.prompt_type, messages, tokenizer=self.tokenizer)
        if self.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join(m["content"] for m in messages)

    def item(self, row: dict, index: int) -> PromptItem:
        prompt, messages = self._messages(row)
        text = self.render(messages)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise PromptError(f"{row['_where']}: the prompt is empty after rendering")
        ids = ids[-self.max_len:]  # keep the end: it holds the assistant prefix the model continues
        gt_key = self.keys.get("gt_answer")
        return PromptItem(index, prompt, text, ids, row.get(gt_key) if gt_key else None)

    def record(self, item: PromptItem, group) -> dict:
        decode = self.tokenizer.decode
        return {
            "index": item.index,
            "prompt": item.prompt,
            "input": item.text,
            "gt_answer": item.gt_answer,
            "responses": [decode(c.token_ids, skip_special_tokens=True) for c in group],
            "response_tokens": [len(c.token_ids) for c in group],
            "finish_reasons": [c.finish_reason for c in group],
            "prompt_tokens": len(item.input_ids),
        }

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
    """Rows of ``--dataset`` as preprocessing reads ``--input``: a .jsonl / .json (array or JSON
    lines) / .parquet / .arrow file, a directory, a glob or ``FORMAT@PATH``; each row tagged with
    ``_where`` (file and 1-based line, or 0-based row / element)."""
    from mindr1.data.sources import DataError, iter_chunks, resolve_inputs

    try:
        files = resolve_inputs(str(path))
    except DataError as exc:
        raise PromptError(f"--dataset: {exc}") from None
    rows: list[dict] = []
    try:
        for chunk in iter_chunks(files, 4096):
            if chunk.data is not None:
                for offset, line in enumerate(chunk.lines()):
                    if line.strip():
                        rows.append(_parsed_line(line, f"{chunk.path}: line {chunk.start + offset}"))
            else:
                rows.extend(_tagged(r, f"{chunk.path}: {chunk.unit} {chunk.start + i}") for i, r in enumerate(chunk.rows))
            if max_samples is not None and len(rows) >= max_samples:
                break
    except DataError as exc:
        raise PromptError(str(exc)) from None
    return rows[:max_samples] if max_samples is not None else rows


def _parsed_line(line: bytes, where: str) -> dict:
    try:
        return _tagged(json.loads(line), where)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PromptError(f"{where}: not valid JSON: {exc}") from None


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
    """Renders rows with ``--apply-chat-template``, a ``--prompt-type`` template, or as plain text;
    ``--input-template`` ('Question: {}\\nAnswer:') wraps a text prompt first."""

    def __init__(self, tokenizer, map_keys: dict, chat_template: bool, prompt_type: Optional[str],
                 prompt_max_len: int, dataset: str = "dataset", input_template: Optional[str] = None):
        if not isinstance(map_keys, dict) or "prompt" not in map_keys:
            raise PromptError(f'--map-keys must be a JSON object with a "prompt" key, got {map_keys!r}')
        unknown = set(map_keys) - {"prompt", "gt_answer", "system", "response"}
        if unknown:
            raise PromptError(f"--map-keys: unknown field(s) {sorted(unknown)}; known: prompt, gt_answer, system, "
                              "response (read by --task rejection_sampling, ignored here)")
        if input_template is not None and "{}" not in input_template:
            raise PromptError(f"--input-template must contain '{{}}' where the prompt goes, got {input_template!r}")
        self.input_template = input_template
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
        if isinstance(prompt, list):
            messages = prompt
        else:
            content = str(prompt)
            if self.input_template is not None:
                content = self.input_template.replace("{}", content, 1)
            messages = [{"role": "user", "content": content}]
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
            "output": [decode(c.token_ids, skip_special_tokens=True) for c in group],
            "response_tokens": [len(c.token_ids) for c in group],
            "finish_reasons": [c.finish_reason for c in group],
            "prompt_tokens": len(item.input_ids),
        }

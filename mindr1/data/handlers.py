"""Row handlers (``--handler-name``): one raw row -> the text to tokenize, validated.

Each handler is registered by name and maps columns through ``--map-keys`` (an empty string
turns an optional column off). Invalid rows raise :class:`RowError` with a reason code, which
preprocessing either stops on (naming the file and line) or counts (``--skip-invalid``):

- ``AlpacaStyleInstructionHandler``: SFT; ``[(text, trained)]`` segments, loss on the response only;
- ``R1AlpacaStyleInstructionHandler``: RL prompts; the prompt with an open assistant turn, plus the
  response as ground truth (additional key ``labels``) and any other named columns as strings;
- ``SharegptStyleInstructionHandler``: multi-turn ``conversations``/``messages``; loss on assistant turns;
- ``GeneralPretrainHandler``: plain text (EOS appended by the pipeline).
"""
from __future__ import annotations

from mindr1.data.templates import render_prompt, render_segments

REASONS = ("malformed_json", "non_utf8", "too_deep", "wrong_type", "missing_key", "empty_field")


class RowError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


HANDLERS: dict[str, type] = {}


def register(cls):
    if cls.__name__ in HANDLERS:
        raise ValueError(f"handler {cls.__name__} registered twice")
    HANDLERS[cls.__name__] = cls
    return cls


def _text(row: dict, key: str, logical: str, required: bool, scalar_ok: bool = False) -> str | None:
    if not key:
        return None
    if key not in row or row[key] is None:
        if required:
            raise RowError("missing_key", f"key {key!r} (mapped from {logical!r}) is missing")
        return None
    value = row[key]
    if scalar_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RowError("wrong_type", f"key {key!r} (mapped from {logical!r}) must be a string, "
                                     f"got {type(value).__name__}")
    if required and not value.strip():
        raise RowError("empty_field", f"key {key!r} (mapped from {logical!r}) is empty")
    return value


class Handler:
    """Base: holds the key map, template and tokenizer; ``kind`` says what the pipeline builds."""

    kind = "instruction"
    default_keys: dict = {}

    def __init__(self, map_keys: dict | None, template: str, tokenizer, additional_keys=()):
        unknown = set(map_keys or {}) - set(self.default_keys)
        if unknown:
            raise ValueError(f"--map-keys: {sorted(unknown)} not understood by {type(self).__name__}; "
                             f"its keys are {sorted(self.default_keys)}")
        self.keys = {**self.default_keys, **(map_keys or {})}
        self.template, self.tokenizer = template, tokenizer
        self.additional_keys = list(additional_keys)

    def check_row(self, row) -> dict:
        if not isinstance(row, dict):
            raise RowError("wrong_type", f"expected a JSON object, got {type(row).__name__}")
        return row


class _AlpacaBase(Handler):
    default_keys = {"prompt": "instruction", "query": "input", "response": "output",
                    "system": "system", "history": "history"}

    def messages(self, row: dict, with_response: bool) -> list[dict]:
        k = self.keys
        prompt = _text(row, k["prompt"], "prompt", required=True)
        query = _text(row, k["query"], "query", required=False)
        system = _text(row, k["system"], "system", required=False)
        msgs = [{"role": "system", "content": system}] if system else []
        history = row.get(k["history"]) if k["history"] else None
        if history is not None:
            if not isinstance(history, list) or not all(
                    isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p)
                    for p in history):
                raise RowError("wrong_type", f"key {k['history']!r} (mapped from 'history') must be a "
                                             "list of [user, assistant] string pairs")
            for user, assistant in history:
                msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        msgs.append({"role": "user", "content": f"{prompt}\n{query}" if query else prompt})
        if with_response:
            response = _text(row, k["response"], "response", required=True)
            msgs.append({"role": "assistant", "content": response})
        return msgs


@register
class AlpacaStyleInstructionHandler(_AlpacaBase):
    """SFT rows; everything before the final response (history included) is prompt (-100)."""

    def segments(self, row) -> list[tuple[str, bool]]:
        segs = render_segments(self.template, self.messages(self.check_row(row), True), self.tokenizer)
        *prompt, last = segs
        if not last[1]:
            raise RowError("empty_field", "the template rendered no response")
        # history answers stay masked: only the final response is trained
        return [("".join(t for t, _ in prompt), False), last]


@register
class R1AlpacaStyleInstructionHandler(_AlpacaBase):
    """RL prompts: the prompt with an open assistant turn, plus additional key strings."""

    kind = "prompt"

    def prompt(self, row) -> tuple[str, dict[str, str]]:
        row = self.check_row(row)
        extras = {}
        for key in self.additional_keys:
            if key == "labels":
                extras[key] = _text(row, self.keys["response"], "response", required=True, scalar_ok=True)
            else:
                extras[key] = _text(row, key, key, required=True, scalar_ok=True)
        return render_prompt(self.template, self.messages(row, False), self.tokenizer), extras


@register
class SharegptStyleInstructionHandler(Handler):
    """Multi-turn conversations (ShareGPT ``from``/``value`` or OpenAI ``role``/``content``)."""

    default_keys = {"messages": "conversations", "role": "from", "content": "value", "system": "system",
                    "user_tag": "human", "assistant_tag": "gpt", "system_tag": "system"}
    _ALIASES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
                "system": "system"}

    def _roles(self) -> dict:
        k = self.keys
        return {**self._ALIASES, k["user_tag"]: "user", k["assistant_tag"]: "assistant", k["system_tag"]: "system"}

    def conversation(self, row) -> list[dict]:
        row, k = self.check_row(row), self.keys
        key = k["messages"]
        if key not in row and key == "conversations" and "messages" in row:
            key = "messages"  # OpenAI-style rows without a --map-keys entry
        turns = row.get(key)
        if turns is None:
            raise RowError("missing_key", f"key {key!r} (mapped from 'messages') is missing")
        if not isinstance(turns, list) or not turns:
            raise RowError("wrong_type" if not isinstance(turns, list) else "empty_field",
                           f"key {key!r} must be a non-empty list of turns")
        roles, msgs = self._roles(), []
        system = _text(row, k["system"], "system", required=False)
        if system:
            msgs.append({"role": "system", "content": system})
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise RowError("wrong_type", f"{key}[{i}] must be an object, got {type(turn).__name__}")
            role_key = k["role"] if k["role"] in turn else ("role" if "role" in turn else k["role"])
            content_key = k["content"] if k["content"] in turn else ("content" if "content" in turn else k["content"])
            role = roles.get(turn.get(role_key))
            if role is None:
                raise RowError("missing_key" if role_key not in turn else "wrong_type",
                               f"{key}[{i}]: role key {role_key!r} missing or unknown value {turn.get(role_key)!r}")
            content = _text(turn, content_key, f"{key}[{i}].content", required=True)
            msgs.append({"role": role, "content": content})
        if msgs[-1]["role"] != "assistant":
            raise RowError("wrong_type", f"key {key!r}: the last turn must be the assistant's")
        return msgs

    def segments(self, row) -> list[tuple[str, bool]]:
        return render_segments(self.template, self.conversation(row), self.tokenizer)


@register
class GeneralPretrainHandler(Handler):
    """Plain text; ``text`` may name several columns (a JSON list), joined by newlines."""

    kind = "pretrain"
    default_keys = {"text": "text"}

    def text(self, row) -> str:
        row = self.check_row(row)
        names = self.keys["text"] if isinstance(self.keys["text"], list) else [self.keys["text"]]
        parts = [_text(row, name, "text", required=True) for name in names]
        return "\n".join(parts)


def get_handler(name: str) -> type:
    if name not in HANDLERS:
        raise ValueError(f"unknown --handler-name {name!r}; known: {sorted(HANDLERS)}")
    return HANDLERS[name]

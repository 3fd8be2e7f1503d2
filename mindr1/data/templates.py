"""Prompt templates: ``configs/finetune/templates.json`` rendered to text (pure Python, no torch).

A template is a JSON object of string fields in which ``{content}``, ``{bos_token}`` and
``{eos_token}`` are replaced (plain replacement, so text such as ``\\boxed{}`` needs no escaping):

- ``user`` (required): one user turn, with ``{content}``;
- ``assistant_prefix`` (required, may be empty): what opens an assistant turn; it is prompt, not loss;
- ``assistant`` (required): the assistant content and its end-of-turn, with ``{content}``;
- ``system`` (optional, with ``{content}``): a system turn; without it a system text is put in front
  of the first user turn; ``default_system`` (optional) is used when a sample brings none;
- ``prefix`` (optional): the start of every conversation (e.g. ``{bos_token}``);
- ``description``, ``stop_words`` (optional): documentation, and stop strings for generation.

The name ``chat_template`` renders with the tokenizer's own Jinja chat template instead.
Users add a template by editing templates.json; a template that does not render says which field
is wrong. Messages are ``{"role": "system"|"user"|"assistant", "content": str}``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

CHAT_TEMPLATE = "chat_template"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KNOWN_PLACEHOLDERS = {"content", "bos_token", "eos_token"}
_STRING_FIELDS = ("description", "prefix", "system", "default_system", "user", "assistant_prefix", "assistant")
_REQUIRED = ("user", "assistant_prefix", "assistant")
_NEEDS_CONTENT = ("system", "user", "assistant")


class TemplateError(ValueError):
    """A template in templates.json is malformed or cannot render the given messages."""


_REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "templates.json"


def default_templates_path() -> Path:
    """``$MINDR1_TEMPLATES`` or the repository's ``configs/finetune/templates.json``."""
    env = os.environ.get("MINDR1_TEMPLATES")
    return Path(env) if env else _REPO_TEMPLATES


@dataclass(frozen=True)
class Template:
    name: str
    user: str
    assistant_prefix: str
    assistant: str
    prefix: str = ""
    system: str | None = None
    default_system: str | None = None
    description: str = ""
    stop_words: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, name: str, spec: object, source: str) -> "Template":
        where = f"{source}: template {name!r}"
        if not isinstance(spec, dict):
            raise TemplateError(f"{where}: expected a JSON object, got {type(spec).__name__}")
        known = set(_STRING_FIELDS) | {"stop_words"}
        for key in spec:
            if key not in known:
                raise TemplateError(f"{where}: unknown field {key!r}; known fields: {sorted(known)}")
        for key in _REQUIRED:
            if key not in spec:
                raise TemplateError(f"{where}: missing required field {key!r}")
        for key in _STRING_FIELDS:
            if key in spec and not isinstance(spec[key], str):
                raise TemplateError(f"{where}: field {key!r} must be a string, got {type(spec[key]).__name__}")
        for key in _STRING_FIELDS:
            for ph in _PLACEHOLDER.findall(spec.get(key) or ""):
                if ph not in _KNOWN_PLACEHOLDERS:
                    raise TemplateError(f"{where}: field {key!r} uses unknown placeholder {{{ph}}}; "
                                        f"known: {sorted(_KNOWN_PLACEHOLDERS)}")
        for key in _NEEDS_CONTENT:
            if key in spec and "{content}" not in spec[key]:
                raise TemplateError(f"{where}: field {key!r} must contain {{content}}")
        stops = spec.get("stop_words", [])
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise TemplateError(f"{where}: field 'stop_words' must be a list of strings")
        kwargs = {k: spec[k] for k in _STRING_FIELDS if k in spec}
        return cls(name=name, stop_words=tuple(stops), **kwargs)


_CACHE: dict[str, dict[str, Template]] = {}


def load_templates(path: str | os.PathLike | None = None) -> dict[str, Template]:
    """All templates of ``path`` (default: :func:`default_templates_path`), validated."""
    key = str(path) if path else os.environ.get("MINDR1_TEMPLATES", "")
    if key in _CACHE:  # rendered once per row: no filesystem calls on the hot path
        return _CACHE[key]
    path = Path(path) if path else default_templates_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"templates file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise TemplateError(f"{path}: expected a JSON object mapping template names to templates")
    _CACHE[key] = {name: Template.from_dict(name, spec, str(path)) for name, spec in raw.items()}
    return _CACHE[key]


def template_names(path=None) -> list[str]:
    return sorted(load_templates(path)) + [CHAT_TEMPLATE]


def get_template(name: str, path=None) -> Template:
    templates = load_templates(path)
    if name not in templates:
        raise TemplateError(f"unknown prompt type {name!r}; known: {template_names(path)} "
                            f"(add one to {path or default_templates_path()})")
    return templates[name]


def _special(tokenizer, attr: str) -> str:
    value = getattr(tokenizer, attr, None) if tokenizer is not None else None
    return value if isinstance(value, str) else ""


def _fill(text: str, content: str, tokenizer) -> str:
    # Special tokens first, content last: user text containing "{eos_token}" stays literal.
    if "{bos_token}" in text:
        text = text.replace("{bos_token}", _special(tokenizer, "bos_token"))
    if "{eos_token}" in text:
        text = text.replace("{eos_token}", _special(tokenizer, "eos_token"))
    return text.replace("{content}", content)


def _as_messages(messages_or_prompt) -> list[dict]:
    if isinstance(messages_or_prompt, str):
        return [{"role": "user", "content": messages_or_prompt}]
    return list(messages_or_prompt)


def _segments_from_template(t: Template, messages: list[dict], tokenizer, open_turn: bool) -> list[tuple[str, bool]]:
    """``[(text, trained)]``: assistant contents (with their end-of-turn) are trained, the rest not."""
    msgs = list(messages)
    system = msgs.pop(0)["content"] if msgs and msgs[0].get("role") == "system" else t.default_system
    pending = _fill(t.prefix, "", tokenizer)
    fold = ""
    if system:
        if t.system is not None:
            pending += _fill(t.system, system, tokenizer)
        else:
            fold = system + "\n\n"  # no system field: the system text leads the first user turn
    segments: list[tuple[str, bool]] = []
    for i, msg in enumerate(msgs):
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(content, str):
            raise TemplateError(f"template {t.name!r}: message {i} has no string 'content'")
        if role == "user":
            pending += _fill(t.user, fold + content, tokenizer)
            fold = ""
        elif role == "assistant":
            segments.append((pending + _fill(t.assistant_prefix, "", tokenizer), False))
            segments.append((_fill(t.assistant, content, tokenizer), True))
            pending = ""
        elif role == "system" and t.system is not None:
            pending += _fill(t.system, content, tokenizer)
        else:
            raise TemplateError(f"template {t.name!r}: message {i} has unsupported role {role!r}")
    if open_turn:
        pending += _fill(t.assistant_prefix, "", tokenizer)
    if pending:
        segments.append((pending, False))
    return segments


def _jinja_render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not template:
        raise TemplateError("prompt type 'chat_template' needs a tokenizer that has a chat_template "
                            "(tokenizer_config.json 'chat_template' or chat_template.jinja)")
    from mindr1.data._jinja import render_chat_template

    return render_chat_template(template, messages, add_generation_prompt,
                                bos_token=_special(tokenizer, "bos_token"), eos_token=_special(tokenizer, "eos_token"))


def _segments_from_chat_template(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """Split the tokenizer's rendering into turns by rendering growing prefixes of the conversation."""
    full = _jinja_render(tokenizer, messages, False)
    segments, pos = [], 0
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        prompt = _jinja_render(tokenizer, messages[:i], True)
        start = len(prompt)
        if not full.startswith(prompt) or start < pos:
            raise TemplateError(f"chat_template: the rendering up to message {i} is not a prefix of the "
                                "whole conversation, so assistant turns cannot be located")
        upto = _jinja_render(tokenizer, messages[: i + 1], False)
        if full.startswith(upto):
            end = len(upto)
        else:  # e.g. templates that render the last assistant turn differently: find its content
            found = full.find(msg["content"], start)
            if found < 0:
                raise TemplateError(f"chat_template: assistant message {i} not found in the rendering")
            end = found + len(msg["content"])
            eos = _special(tokenizer, "eos_token")
            end += len(eos) if eos and full.startswith(eos, end) else 0
        segments += [(full[pos:start], False), (full[start:end], True)]
        pos = end
    if pos < len(full):
        segments.append((full[pos:], False))
    return [s for s in segments if s[0]]


def render_segments(template_name: str, messages, tokenizer=None, path=None) -> list[tuple[str, bool]]:
    """A whole training conversation as ``[(text, trained)]``; joined, the texts are the rendering."""
    messages = _as_messages(messages)
    if template_name == CHAT_TEMPLATE:
        return _segments_from_chat_template(tokenizer, messages)
    return _segments_from_template(get_template(template_name, path), messages, tokenizer, open_turn=False)


def render_prompt(template_name: str, messages_or_prompt, tokenizer=None, path=None) -> str:
    """The prompt text ending in an open assistant turn (for rollouts and RL prompt datasets)."""
    messages = _as_messages(messages_or_prompt)
    if template_name == CHAT_TEMPLATE:
        return _jinja_render(tokenizer, messages, True)
    t = get_template(template_name, path)
    return "".join(text for text, _ in _segments_from_template(t, messages, tokenizer, open_turn=True))


def stop_words(template_name: str, tokenizer=None, path=None) -> list[str]:
    """Stop strings for generation with this template."""
    if template_name == CHAT_TEMPLATE:
        eos = _special(tokenizer, "eos_token")
        return [eos] if eos else []
    return list(get_template(template_name, path).stop_words)

"""Render a tokenizer's Jinja chat template the way transformers' ``apply_chat_template`` does.

Kept apart so that jinja2 is imported only when the ``chat_template`` prompt type is used.
"""
from __future__ import annotations

import functools
import json


def _raise(message: str):
    from mindr1.data.templates import TemplateError

    raise TemplateError(f"chat_template raised: {message}")


@functools.lru_cache(maxsize=8)
def _compile(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    # transformers' tojson keeps non-ASCII characters as they are
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def render_chat_template(source: str, messages: list[dict], add_generation_prompt: bool,
                         bos_token: str = "", eos_token: str = "") -> str:
    return _compile(source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=bos_token, eos_token=eos_token, tools=None)

"""R1's readability filters for rejection sampling (pure string code, no model).

DeepSeek-R1 (section 2.3.3) dropped chains of thought "with mixed languages, long paragraphs, and
code blocks" before its stage-3 SFT. Each filter here is one function ``(text, prompt) -> reason |
None`` with its own switch and threshold in :class:`ReadabilityConfig`; :func:`readability_failures`
runs the enabled ones and names every one that failed (the report counts them separately).

- ``mixed_language``: share of letters in the chain of thought whose script is not the prompt's
  main script (Greek letters and mathematical alphanumerics are symbols in maths, not a language).
- ``long_paragraph``: a paragraph (text between blank lines) longer than a character limit.
- ``code_block``: a fenced block (```/~~~) in the answer to a prompt that is not about code.
- ``tags``: ``<think>``/``<answer>`` tags missing (when required) or repeated, unpaired or out of order.
- ``repetition``: share of repeated word n-grams (degenerate loops).

Every scan is linear in the text: responses are model output of any size.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, fields
from typing import Callable, Optional

from mindr1.rl.rewards.answers import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

TAG_MODES = ("off", "if_present", "required")
_SAME_SCRIPT = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "CJK": "CJK", "FULLWIDTH": "LATIN", "HANGUL": "HANGUL"}
_NOT_LANGUAGE = {"GREEK", "MATHEMATICAL", "DOUBLE-STRUCK", "SCRIPT", "BLACK-LETTER", "MODIFIER"}
_CODE_WORDS = ("```", "python", "code", "program", "function", "implement", "script")


@dataclass
class ReadabilityConfig:
    """Switches and thresholds of the readability filters (each flag of `mindr1 rejection-sample`)."""

    mixed_language: bool = True
    """Drop chains of thought that mix scripts (R1: mixed languages)."""
    max_foreign_share: float = 0.1
    """Largest allowed share of letters outside the prompt's main script, in [0, 1]."""
    long_paragraph: bool = True
    """Drop responses with an over-long paragraph."""
    max_paragraph_chars: int = 2000
    """Longest allowed paragraph (characters between blank lines)."""
    code_block: bool = True
    """Drop fenced code blocks in answers to prompts that are not about code."""
    tags: str = "if_present"
    """'required': exactly one <think>..</think> then one <answer>..</answer>; 'if_present': tags
    that appear must appear once each, paired and in that order; 'off'."""
    repetition: bool = True
    """Drop degenerate repetition."""
    repetition_ngram: int = 4
    """Word n-gram size of the repetition measure."""
    max_repeated_ngram_share: float = 0.5
    """Largest allowed share of repeated n-grams (1 - distinct / total), in [0, 1]."""
    repetition_min_ngrams: int = 20
    """Texts with fewer n-grams are not judged (too short to measure)."""

    def __post_init__(self):
        for name in ("max_foreign_share", "max_repeated_ngram_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        for name in ("max_paragraph_chars", "repetition_ngram", "repetition_min_ngrams"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.tags not in TAG_MODES:
            raise ValueError(f"--tags must be one of {list(TAG_MODES)}, got {self.tags!r}")

    @classmethod
    def from_options(cls, opts) -> "ReadabilityConfig":
        """From argparse options named like the fields (``no_<switch>`` turns a filter off)."""
        values = {}
        for f in fields(cls):
            if isinstance(f.default, bool):
                values[f.name] = not getattr(opts, f"no_{f.name}_filter")
            else:
                values[f.name] = getattr(opts, f.name)
        return cls(**values)


def _script(ch: str) -> Optional[str]:
    """The writing system of a letter ('LATIN', 'CJK', 'CYRILLIC', ...); None for non-letters
    and for letters used as maths symbols."""
    if ch.isascii():
        return "LATIN" if ch.isalpha() else None
    if not unicodedata.category(ch).startswith("L"):
        return None
    first = unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
    if first in _NOT_LANGUAGE:
        return None
    return _SAME_SCRIPT.get(first, first)


def script_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ch in text:
        script = _script(ch)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    return counts


def main_script(text: str) -> Optional[str]:
    counts = script_counts(text)
    return max(counts, key=counts.get) if counts else None


def chain_of_thought(text: str) -> str:
    """The `<think>` content when there is one (closed or not), else the whole response."""
    start = text.find(THINK_OPEN)
    if start < 0:
        return text
    end = text.find(THINK_CLOSE, start)
    return text[start + len(THINK_OPEN): end if end >= 0 else len(text)]


def foreign_script_share(text: str, prompt_script: Optional[str]) -> float:
    counts = script_counts(chain_of_thought(text))
    total = sum(counts.values())
    if not total:
        return 0.0
    reference = prompt_script or max(counts, key=counts.get)
    return 1.0 - counts.get(reference, 0) / total


def longest_paragraph(text: str) -> int:
    longest = current = 0
    for line in text.split("\n"):
        if line.strip():
            current += len(line) + 1
            longest = max(longest, current - 1)
        else:
            current = 0
    return longest


def has_code_block(text: str) -> bool:
    return "```" in text or "~~~" in text


def is_code_prompt(prompt: str) -> bool:
    lower = prompt.lower()
    return any(word in lower for word in _CODE_WORDS)


def tag_problem(text: str, required: bool) -> Optional[str]:
    """Why the `<think>`/`<answer>` tags are malformed, or None when they are fine."""
    counts = {tag: text.count(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)}
    repeated = [tag for tag, n in counts.items() if n > 1]
    if repeated:
        return f"repeated {', '.join(repeated)}"
    if required and not all(counts.values()):
        return f"missing {', '.join(tag for tag, n in counts.items() if not n)}"
    for open_, close in ((THINK_OPEN, THINK_CLOSE), (ANSWER_OPEN, ANSWER_CLOSE)):
        if counts[open_] != counts[close]:
            return f"unpaired {open_ if counts[open_] else close}"
        if counts[open_] and text.find(open_) > text.find(close):
            return f"{close} before {open_}"
    if counts[THINK_CLOSE] and counts[ANSWER_OPEN] and text.find(ANSWER_OPEN) < text.find(THINK_CLOSE):
        return f"{ANSWER_OPEN} inside the <think> block"
    return None


def repeated_ngram_share(text: str, n: int, min_ngrams: int) -> float:
    words = text.split()
    total = len(words) - n + 1
    if total < min_ngrams:
        return 0.0
    distinct = {tuple(words[i:i + n]) for i in range(total)}
    return 1.0 - len(distinct) / total


def with_prefilled_think(prompt_text: str, response: str) -> str:
    """A response to a prompt that ends with `<think>` (a prefilled template) read with that tag."""
    tail = prompt_text.rstrip()
    return THINK_OPEN + response if tail.endswith(THINK_OPEN) and THINK_OPEN not in response[:32] else response


Check = Callable[[str, str, ReadabilityConfig], Optional[str]]


def _mixed_language(text: str, prompt: str, cfg: ReadabilityConfig) -> Optional[str]:
    share = foreign_script_share(text, main_script(prompt))
    return f"{share:.0%} of letters outside the prompt's script" if share > cfg.max_foreign_share else None


def _long_paragraph(text: str, prompt: str, cfg: ReadabilityConfig) -> Optional[str]:
    longest = longest_paragraph(text)
    return f"a {longest}-character paragraph" if longest > cfg.max_paragraph_chars else None


def _code_block(text: str, prompt: str, cfg: ReadabilityConfig) -> Optional[str]:
    return "code block in a non-code task" if has_code_block(text) and not is_code_prompt(prompt) else None


def _tags(text: str, prompt: str, cfg: ReadabilityConfig) -> Optional[str]:
    return tag_problem(text, cfg.tags == "required")


def _repetition(text: str, prompt: str, cfg: ReadabilityConfig) -> Optional[str]:
    share = repeated_ngram_share(text, cfg.repetition_ngram, cfg.repetition_min_ngrams)
    return f"{share:.0%} repeated {cfg.repetition_ngram}-grams" if share > cfg.max_repeated_ngram_share else None


FILTERS: dict[str, Check] = {
    "mixed_language": _mixed_language,
    "long_paragraph": _long_paragraph,
    "code_block": _code_block,
    "tags": _tags,
    "repetition": _repetition,
}


def enabled_filters(cfg: ReadabilityConfig) -> list[str]:
    return [name for name in FILTERS if (cfg.tags != "off" if name == "tags" else getattr(cfg, name))]


def readability_failures(response: str, prompt: str, cfg: ReadabilityConfig,
                         prompt_text: str = "") -> dict[str, str]:
    """``{filter name: reason}`` for every enabled filter the response fails (empty: readable).

    ``prompt`` is the task's text (its script, whether it asks for code); ``prompt_text`` the
    rendered prompt the model continued (a trailing `<think>` counts as part of the response).
    """
    text = with_prefilled_think(prompt_text, response) if prompt_text else response
    failures = {}
    for name in enabled_filters(cfg):
        reason = FILTERS[name](text, prompt, cfg)
        if reason is not None:
            failures[name] = reason
    return failures

"""The built-in rule verifiers: `acc`, `format`, `strict_format`.

Format follows the R1 template: `<think> reasoning </think><answer> answer </answer>`.
When the prompt itself ends with `<think>` (a prefilled template, which ANCHORS.md found was
needed for small models to produce the tags at all), the completion is scored as if it
started with the prompt's `<think>` tail.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .answers import (ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, canonical_text, extract_final_answer,
                      normalize_ground_truth, parse_integer)
from .math_checker import MathChecker, default_checker
from .registry import message_text, register_verifier

MAX_ANSWER_CHARS = 1000
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def score_answer(completion: str, label: object, checker: MathChecker | None = None,
                 require_answer_tag: bool = False, max_answer_chars: int = MAX_ANSWER_CHARS,
                 extract: Callable[[str], str | None] | None = None) -> float | None:
    """1.0 / 0.0 for one completion against one ground truth; None when there is no ground truth.

    Cheap exact checks (same text, same integer) run here; anything else goes to math-verify
    through the time-limited `checker`. An answer longer than `max_answer_chars` is wrong
    without parsing: no real final answer is that long, and sympy on it is a denial of service.
    `extract` replaces the default reading of the completion (`extract_final_answer`), e.g.
    `answers.extract_any_answer` for free-form solutions.
    """
    gold = normalize_ground_truth(label)
    if gold is None:
        return None
    pred = extract(completion) if extract is not None else extract_final_answer(completion, require_answer_tag)
    if pred is None or len(pred) > max_answer_chars:
        return 0.0
    if canonical_text(pred) == canonical_text(gold):
        return 1.0
    gold_int, pred_int = parse_integer(gold), parse_integer(pred)
    if gold_int is not None and pred_int is not None:
        return float(gold_int == pred_int)
    return (checker or default_checker()).check(gold, pred)


def _columns_labels(columns: dict, n: int) -> list:
    if "labels" not in columns:
        raise ValueError("the acc verifier needs a 'labels' column (the ground truths); "
                         f"got columns {sorted(columns)}")
    labels = list(columns["labels"])
    if len(labels) != n:
        raise ValueError(f"acc got {len(labels)} labels for {n} completions")
    return labels


@register_verifier("acc")
def accuracy_reward(prompts: Sequence, completions: Sequence, **columns) -> list[float | None]:
    """Final answer (last `\\boxed{}` in `<answer>`, else the tag's text, else the last
    `\\boxed{}` anywhere) equivalent to `labels[i]` by math-verify: 1.0 or 0.0; None without a label."""
    labels = _columns_labels(columns, len(completions))
    return [score_answer(message_text(c), label) for c, label in zip(completions, labels)]


def _with_prefill(prompt: object, completion: object) -> str:
    text = message_text(completion)
    if prompt is None:
        return text
    prompt_text = message_text(prompt)
    tail_at = prompt_text.rfind(THINK_OPEN)
    if tail_at >= 0 and not prompt_text[tail_at:].strip().replace(THINK_OPEN, "", 1):
        return prompt_text[tail_at:] + text
    return text


def think_answer_parts(text: str) -> tuple[str, str] | None:
    """(think, answer) contents if `text` is exactly `<think>..</think><answer>..</answer>`
    (whitespace allowed around and between the blocks, each tag exactly once); else None."""
    body = text.strip()
    if not (body.startswith(THINK_OPEN) and body.endswith(ANSWER_CLOSE)):
        return None
    if any(body.count(tag) != 1 for tag in _TAGS):
        return None
    think_end, answer_start = body.find(THINK_CLOSE), body.find(ANSWER_OPEN)
    if not think_end < answer_start or body[think_end + len(THINK_CLOSE):answer_start].strip():
        return None
    return body[len(THINK_OPEN):think_end], body[answer_start + len(ANSWER_OPEN):-len(ANSWER_CLOSE)]


def _strict_ok(text: str) -> bool:
    parts = think_answer_parts(text)
    if parts is None or not parts[0].strip() or not parts[1].strip():
        return False
    body = text.rstrip()
    return (body.startswith(THINK_OPEN + "\n") and body.endswith("\n" + ANSWER_CLOSE)
            and f"\n{THINK_CLOSE}\n{ANSWER_OPEN}\n" in body)


def _prompt_list(prompts: Sequence | None, n: int) -> list:
    return [None] * n if prompts is None else list(prompts)


@register_verifier("format")
def format_reward(prompts: Sequence, completions: Sequence, **columns) -> list[float]:
    """1.0 if the completion is `<think>..</think><answer>..</answer>` and nothing else."""
    return [float(think_answer_parts(_with_prefill(p, c)) is not None)
            for p, c in zip(_prompt_list(prompts, len(completions)), completions)]


@register_verifier("strict_format")
def strict_format_reward(prompts: Sequence, completions: Sequence, **columns) -> list[float]:
    """1.0 only for the exact layout `<think>\\n..\\n</think>\\n<answer>\\n..\\n</answer>` with
    non-empty reasoning and answer."""
    return [float(_strict_ok(_with_prefill(p, c)))
            for p, c in zip(_prompt_list(prompts, len(completions)), completions)]

"""Scoring of generated responses: the same extraction and verifier as GRPO's ``acc`` reward.

``score_item(prompt, responses, gold, ...)`` scores the k responses of one question:

- the answer is extracted by ``mindr1.rl.rewards.answers.extract_final_answer`` (``<answer>``,
  ``\\boxed{}``, GSM8K's ``#### N``; with ``require_format`` only inside ``<answer>``), and judged
  by ``verifiers.judge_answers``: exact / integer checks, else math-verify on the time-limited
  child processes of ``MathChecker`` (one batch per chunk). A timeout scores the sample wrong and
  is counted, never raised;
- the format flag is the ``format`` verifier (``<think>..</think><answer>..</answer>``, a
  ``<think>`` prefilled by the prompt counted);
- answers are grouped into math-verify-equivalence classes for maj@k (:func:`answer_classes`).

Issue 11 (rejection sampling) and the demo reuse :func:`score_item` and ``metrics.summarize``.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from mindr1.rl.rewards.answers import canonical_text, parse_integer
from mindr1.rl.rewards.math_checker import MathChecker
from mindr1.rl.rewards.verifiers import MAX_ANSWER_CHARS, format_reward, judge_answers

def is_timeout(status: str) -> bool:
    """A verifier outcome that hit the per-item time limit (the worker's timer or the hard deadline)."""
    return status in ("timeout", "batch_deadline") or status.startswith("killed")


def _quick_key(answer: str):
    """A cheap key equal for answers that are trivially the same (same text, same integer)."""
    as_int = parse_integer(answer)
    return ("int", as_int) if as_int is not None else ("text", canonical_text(answer))


def answer_classes(answers: Sequence[Optional[str]],
                   equivalent: Callable[[str, str], bool]) -> tuple[list[Optional[int]], list[int]]:
    """Group answers into equivalence classes: ``(class of each answer, first sample of each class)``.

    A missing (None) or over-long answer has class None. Trivially equal answers share a class
    without a call; otherwise an answer joins the first class whose first member is
    ``equivalent`` to it (math-verify is not transitive, so the first member is the reference).
    """
    classes: list[Optional[int]] = []
    reps: list[int] = []
    by_key: dict = {}
    for i, ans in enumerate(answers):
        if ans is None or len(ans) > MAX_ANSWER_CHARS:
            classes.append(None)
            continue
        key = _quick_key(ans)
        if key in by_key:
            classes.append(by_key[key])
            continue
        found = None
        for cls, rep in enumerate(reps):
            rep_key = _quick_key(answers[rep])
            if key[0] == rep_key[0] == "int":
                continue  # two different integers are never equal
            if equivalent(answers[rep], ans):
                found = cls
                break
        if found is None:
            found = len(reps)
            reps.append(i)
        by_key[key] = found
        classes.append(found)
    return classes, reps


def checker_equivalence(checker: MathChecker) -> Callable[[str, str], bool]:
    return lambda a, b: checker.check(a, b) == 1.0


def score_item(prompt: str, responses: Sequence[str], gold: object, checker: MathChecker,
               require_format: bool = False, lengths: Optional[Sequence[int]] = None,
               truncated: Optional[Sequence[bool]] = None) -> dict:
    """One question's k responses -> the record ``metrics.summarize`` reads, plus per-sample detail.

    Keys: ``answers``, ``correct``, ``formatted``, ``classes``, ``class_correct`` (per class: is it right),
    ``lengths``, ``truncated``, ``timeouts``, ``statuses``.
    """
    return score_items([prompt], [responses], [gold], checker, require_format,
                       None if lengths is None else [lengths], None if truncated is None else [truncated])[0]


def score_items(prompts: Sequence[str], responses: Sequence[Sequence[str]], golds: Sequence[object],
                checker: MathChecker, require_format: bool = False,
                lengths: Optional[Sequence[Sequence[int]]] = None,
                truncated: Optional[Sequence[Sequence[bool]]] = None) -> list[dict]:
    """:func:`score_item` over a chunk of questions: every response that needs math-verify is checked in
    one batch on the checker's worker pool (``judge_answers``), not one call after the other."""
    flat = [(q, r) for q, group in enumerate(responses) for r in group]
    judged = judge_answers([r for _, r in flat], [golds[q] for q, _ in flat], checker,
                           require_answer_tag=require_format)
    records, at = [], 0
    for q, (prompt, group) in enumerate(zip(prompts, responses)):
        mine, at = judged[at:at + len(group)], at + len(group)
        answers, correct, statuses, timeouts = [], [], [], 0
        for score, pred, status in mine:
            if score is None:
                raise ValueError(f"no ground truth for prompt {prompt[:80]!r}: every evaluation item needs an answer")
            answers.append(pred)
            correct.append(score == 1.0)
            statuses.append(status)
            timeouts += is_timeout(status)
        formatted = [bool(f) for f in format_reward([prompt] * len(group), list(group))]
        classes, reps = answer_classes(answers, checker_equivalence(checker))
        records.append({
            "answers": answers, "correct": correct, "formatted": formatted, "classes": classes,
            "class_correct": [correct[rep] for rep in reps], "statuses": statuses, "timeouts": timeouts,
            "lengths": list(lengths[q]) if lengths is not None else [0] * len(group),
            "truncated": list(truncated[q]) if truncated is not None else [False] * len(group)})
    return records

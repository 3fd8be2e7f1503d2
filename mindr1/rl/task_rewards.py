"""Extra rule verifiers for GRPO tasks, registered beside the built-in ones (``acc``, ``format``).

``number``: the completion's final number equals the integer ground truth: the number inside
``<answer>`` when there is one, else the last number in the text. It is the accuracy signal a
small instruct model can earn before it has learned the tags (SmolLM2 never writes
``<answer>`` unprompted: ANCHORS.md), and it cannot be hacked by format alone: pair it with
``format`` gated on it (``reward.gate: number``) so the tags pay only on a right answer.
"""
from __future__ import annotations

import re
from typing import Sequence

from mindr1.rl.rewards.answers import answer_tag_content, normalize_ground_truth, parse_integer
from mindr1.rl.rewards.registry import get_verifier, message_text, register_verifier

_NUMBER = re.compile(r"-?\d[\d,]*")


def final_number(text: str) -> int | None:
    """The integer a completion ends on (inside <answer> if present), None when it states none."""
    tagged = answer_tag_content(text)
    candidates = _NUMBER.findall(tagged if tagged is not None else text)
    if not candidates:
        return None
    return parse_integer(candidates[-1].replace(",", ""))


def number_reward(prompts: Sequence, completions: Sequence, **columns) -> list[float | None]:
    labels = columns.get("labels")
    if labels is None:
        raise ValueError(f"the number verifier needs a 'labels' column; got columns {sorted(columns)}")
    out: list[float | None] = []
    for completion, label in zip(completions, labels):
        gold = normalize_ground_truth(label)
        gold_int = parse_integer(gold) if gold is not None else None
        if gold_int is None:
            out.append(None)
            continue
        pred = final_number(message_text(completion))
        out.append(float(pred is not None and pred == gold_int))
    return out


def register() -> None:
    """Register the verifiers of this module once per process."""
    try:
        get_verifier("number")
    except KeyError:
        register_verifier("number")(number_reward)


register()

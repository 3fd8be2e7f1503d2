"""The verifier registry and the weighted combination of verifiers into per-sample rewards.

A verifier is `fn(prompts, completions, **columns) -> list[float | None]`; `None` means "not
applicable to this sample" (e.g. `acc` on a row without a ground truth), which is different
from 0.0 ("applicable and wrong"). The config names verifiers and weights
(`verifier_function: [acc, format]`, `verifier_weight: [0.5, 0.5]`).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

Verifier = Callable[..., list]
Scores = dict[str, list]

_VERIFIERS: dict[str, Verifier] = {}


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    """Decorator registering a verifier under `name`; a second registration of a name raises."""

    def decorator(fn: Verifier) -> Verifier:
        if name in _VERIFIERS:
            raise ValueError(f"verifier {name!r} is already registered (by {_VERIFIERS[name].__module__}."
                             f"{_VERIFIERS[name].__name__})")
        _VERIFIERS[name] = fn
        return fn

    return decorator


def get_verifier(name: str) -> Verifier:
    if name not in _VERIFIERS:
        raise KeyError(f"unknown verifier {name!r} in verifier_function; registered: {sorted(_VERIFIERS)}")
    return _VERIFIERS[name]


def list_verifiers() -> list[str]:
    return sorted(_VERIFIERS)


def message_text(item: object) -> str:
    """A prompt or completion as text: plain strings pass through; a chat (list of
    `{"role", "content"}` messages) gives its last message's content."""
    if isinstance(item, str):
        return item
    if isinstance(item, (list, tuple)) and item and isinstance(item[-1], dict):
        return str(item[-1].get("content", ""))
    raise TypeError(f"expected a string or a list of chat messages, got {type(item).__name__}")


def completion_problem(item: object) -> str | None:
    """Why a completion cannot be scored (``none``, ``not_text:<type>``), or None when it is text."""
    if isinstance(item, str):
        return None
    if item is None:
        return "none"
    if isinstance(item, (list, tuple)) and item and isinstance(item[-1], dict) \
            and isinstance(item[-1].get("content", ""), str):
        return None
    return f"not_text:{type(item).__name__}"


def _checked(name: str, values: list, n: int) -> list:
    if len(values) != n:
        raise ValueError(f"verifier {name!r} returned {len(values)} scores for {n} completions")
    out = []
    for v in values:
        if v is not None:
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"verifier {name!r} returned a non-finite score {v}")
        out.append(v)
    return out


def compute_rewards(names: Sequence[str], weights: Sequence[float] | None, prompts: Sequence,
                    completions: Sequence, *, gate: str | None = None, counts: dict | None = None,
                    **columns) -> tuple[list, Scores]:
    """Run the named verifiers and combine them: reward_i = sum_v weight_v * score_v,i.

    Verifiers that return None for sample i are left out of its sum; a sample no verifier
    applies to gets reward None (the caller decides: drop it, or score it another way).
    gate: name of one of the verifiers (e.g. "acc") whose score multiplies every other
      verifier's score on the same sample, so format earns nothing on a wrong answer (format
      reward alone gets hacked: ANCHORS.md). A None gate score leaves that sample ungated.
    A completion that is not text (None, a number, ...) scores 0.0 on every verifier and is
    counted in ``counts`` (when given) as ``invalid_completion/<reason>``; the batch goes on.
    Returns (rewards, scores) with scores[name] the raw per-sample scores, for metrics.
    """
    weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(f"verifier_weight has {len(weights)} entries for {len(names)} verifier_function "
                         f"entries {list(names)}")
    if gate is not None and gate not in names:
        raise ValueError(f"reward gate {gate!r} must be one of verifier_function {list(names)}")
    n = len(completions)
    bad = {i: why for i, c in enumerate(completions) if (why := completion_problem(c)) is not None}
    if bad:
        completions = ["" if i in bad else c for i, c in enumerate(completions)]
    scores = {name: _checked(name, get_verifier(name)(prompts, completions, **columns), n) for name in names}
    for i, why in bad.items():
        for values in scores.values():
            values[i] = 0.0
        if counts is not None:
            key = f"invalid_completion/{why}"
            counts[key] = counts.get(key, 0) + 1
    rewards: list = []
    for i in range(n):
        gate_score = scores[gate][i] if gate is not None else None
        total, applicable = 0.0, False
        for name, weight in zip(names, weights):
            score = scores[name][i]
            if score is None:
                continue
            if gate_score is not None and name != gate:
                score *= gate_score
            total, applicable = total + weight * score, True
        rewards.append(total if applicable else None)
    return rewards, scores


def reward_metrics(scores: Scores, rewards: Sequence | None = None) -> dict[str, float]:
    """Means over applicable samples of each verifier (`rewards/<name>`), the share of samples
    it did not apply to (`rewards/<name>_na`), and the mean combined reward."""
    metrics: dict[str, float] = {}
    for name, values in scores.items():
        valid = [v for v in values if v is not None]
        metrics[f"rewards/{name}"] = sum(valid) / len(valid) if valid else float("nan")
        metrics[f"rewards/{name}_na"] = 1.0 - len(valid) / len(values) if values else 0.0
    if rewards is not None:
        valid = [r for r in rewards if r is not None]
        metrics["rewards/total"] = sum(valid) / len(valid) if valid else float("nan")
    return metrics

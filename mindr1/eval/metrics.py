"""Evaluation metrics as pure functions over scored samples (no model, no I/O, no math-verify).

- ``pass_at_k(n, c, k)``: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language
  Models Trained on Code", eq. 1): ``1 - C(n-c, k) / C(n, k)``, computed as a product so that
  n = 64..1024 never builds huge binomials.
- ``maj_at_k(classes, class_correct, k)``: majority vote over the first ``k`` samples, where
  ``classes[i]`` is the equivalence class of sample i's answer (None: no answer, no vote);
  ties go to the class seen first. Classes come from ``mindr1.eval.scoring.answer_classes``
  (math-verify equivalence), so '1/2', '0.5' and '\\frac{1}{2}' are one vote.
- ``summarize(items)``: every figure of one benchmark from per-item sample lists.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def ks_for(n: int) -> list[int]:
    """1 and the powers of two <= n: the k of every pass@k / maj@k reported for n samples."""
    if n < 1:
        raise ValueError(f"n-samples must be >= 1, got {n}")
    out, k = [], 1
    while k <= n:
        out.append(k)
        k *= 2
    return out


def maj_at_k(classes: Sequence[Optional[int]], class_correct: Sequence[bool], k: int) -> float:
    """1.0 if the most frequent answer class among the first k samples is correct, else 0.0."""
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for i, cls in enumerate(classes[:k]):
        if cls is None:
            continue
        counts[cls] = counts.get(cls, 0) + 1
        first.setdefault(cls, i)
    if not counts:
        return 0.0
    winner = max(counts, key=lambda c: (counts[c], -first[c]))
    return float(bool(class_correct[winner]))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def stderr(values: Sequence[float]) -> float:
    """Standard error of the mean of ``values`` (sample standard deviation / sqrt(m)); 0 for m < 2."""
    m = len(values)
    if m < 2:
        return 0.0
    mu = mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (m - 1) / m)


def item_metrics(correct: Sequence[bool], classes: Sequence[Optional[int]], class_correct: Sequence[bool],
                 ks: Sequence[int]) -> dict:
    """pass@1 (mean over the samples), pass@k and maj@k of one item's samples."""
    n, c = len(correct), sum(bool(x) for x in correct)
    out = {"pass@1": c / n}
    for k in ks:
        out[f"pass@{k}"] = pass_at_k(n, c, k)
        out[f"maj@{k}"] = maj_at_k(classes, class_correct, k)
    return out


def summarize(items: Sequence[dict], n_samples: int) -> dict:
    """One benchmark's figures from per-item records.

    Each record: ``correct`` (list of bool, one per sample), ``classes`` (answer class per sample),
    ``class_correct`` (per class: is it right), ``formatted`` (list of bool), ``lengths`` (response tokens),
    ``truncated`` (list of bool), ``timeouts`` (int).
    """
    if not items:
        raise ValueError("no items to summarize")
    ks = ks_for(n_samples)
    per_item = [item_metrics(it["correct"], it["classes"], it["class_correct"], ks) for it in items]
    samples = [(f, ln, t) for it in items for f, ln, t in zip(it["formatted"], it["lengths"], it["truncated"])]
    out = {"n_items": len(items), "n_samples": n_samples}
    out["pass@1"] = mean([m["pass@1"] for m in per_item])
    out["pass@1_stderr"] = stderr([m["pass@1"] for m in per_item])
    for k in ks:
        out[f"pass@{k}"] = mean([m[f"pass@{k}"] for m in per_item])
    for k in ks:
        out[f"maj@{k}"] = mean([m[f"maj@{k}"] for m in per_item])
    out["format_rate"] = mean([float(f) for f, _, _ in samples])
    out["response_length_mean"] = mean([float(ln) for _, ln, _ in samples])
    out["response_length_max"] = max(ln for _, ln, _ in samples)
    out["truncated_frac"] = mean([float(t) for _, _, t in samples])
    out["timeouts"] = sum(int(it.get("timeouts", 0)) for it in items)
    return out


def overall(per_benchmark: dict[str, dict]) -> dict:
    """Macro average over benchmarks of every figure they all share (counts are summed)."""
    if not per_benchmark:
        return {}
    keys = set.intersection(*(set(m) for m in per_benchmark.values()))
    out = {}
    for key in sorted(keys):
        values = [m[key] for m in per_benchmark.values()]
        if key in ("n_items", "timeouts"):
            out[key] = sum(values)
        elif key == "response_length_max":
            out[key] = max(values)
        elif key == "pass@1_stderr":  # of the macro mean of independent benchmarks
            out[key] = math.sqrt(sum(v * v for v in values)) / len(values)
        elif key != "n_samples":
            out[key] = mean(values)
    return out

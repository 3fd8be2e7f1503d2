"""Candidates of rejection sampling, the per-prompt selection, and the report that counts each filter.

A :class:`Candidate` is one response to one prompt. The stages of ``mindr1 rejection-sample``
mark candidates (``failed[stage] = reason``); the stage that first rejects a candidate is where it
was *dropped*, every stage it failed is listed in its ``filters_failed``. The report
(``OUTPUT_report.json``) counts, per stage, the candidates it checked, failed and dropped, so an
empty result names the stage that removed the last candidates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

STAGES = ("truncated", "rules", "mixed_language", "long_paragraph", "code_block", "tags", "repetition", "judge")
READABILITY = ("mixed_language", "long_paragraph", "code_block", "tags", "repetition")
_LENGTH_BINS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_RATE_BINS = ((0.0, 0.0, "0"), (0.0, 0.25, "(0,0.25]"), (0.25, 0.5, "(0.25,0.5]"), (0.5, 0.75, "(0.5,0.75]"),
              (0.75, 1.0, "(0.75,1]"))


@dataclass
class PromptGroup:
    """One prompt with its N responses (one generate row, or MindSpeed's flat rows joined)."""

    index: int
    prompt: Any
    input_text: str
    gt_answer: Any
    where: str
    responses: list[str]
    finish_reasons: Optional[list[str]] = None
    response_tokens: Optional[list[int]] = None


@dataclass
class Candidate:
    group: PromptGroup
    j: int                                     # position among the prompt's responses
    text: str
    failed: dict[str, str] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    judgement: Optional[str] = None
    reward: Optional[float] = None
    recovered: bool = False                    # rejected by the rules, accepted by the judge
    dropped_at: Optional[str] = None

    @property
    def alive(self) -> bool:
        return self.dropped_at is None

    @property
    def length(self) -> int:
        tokens = self.group.response_tokens
        return tokens[self.j] if tokens is not None else len(self.text)

    def fail(self, stage: str, reason: str, drop: bool = True) -> None:
        self.failed[stage] = reason
        if drop and self.dropped_at is None:
            self.dropped_at = stage


def select(candidates: list[Candidate], keep_per_prompt: int) -> list[Candidate]:
    """Per prompt, the ``keep_per_prompt`` best surviving distinct responses: highest reward first,
    ties broken by the shortest (then by position, so the choice is deterministic)."""
    by_group: dict[int, list[Candidate]] = {}
    for c in candidates:
        if c.alive:
            by_group.setdefault(c.group.index, []).append(c)
    chosen = []
    for index in sorted(by_group):
        seen: set[str] = set()
        ranked = sorted(by_group[index], key=lambda c: (-(c.reward or 0.0), c.length, c.j))
        for c in ranked:
            key = " ".join(c.text.split())
            if key not in seen:
                seen.add(key)
                chosen.append(c)
            if len(seen) == keep_per_prompt:
                break
    return chosen


def output_row(c: Candidate) -> dict:
    """MindSpeed's fields (``prompt``, ``output``, ``reward``) and ours."""
    return {"prompt": c.group.prompt, "output": c.text, "reward": c.reward, "gt_answer": c.group.gt_answer,
            "scores": c.scores, "filters_failed": sorted(c.failed), "index": c.group.index, "response_index": c.j}


def scored_row(c: Candidate, kept: bool) -> dict:
    """Every response with every score and the judge's text (``OUTPUT_scored.jsonl``)."""
    return dict(output_row(c), kept=kept, dropped_at=c.dropped_at, reasons=c.failed, judgement=c.judgement,
                recovered=c.recovered)


def _stage_counts(candidates: list[Candidate], checked: dict[str, int]) -> dict[str, dict]:
    out = {}
    for stage in STAGES:
        if stage not in checked:
            continue
        out[stage] = {"checked": checked[stage],
                      "failed": sum(stage in c.failed for c in candidates),
                      "dropped": sum(c.dropped_at == stage for c in candidates)}
    return out


def _length_histogram(lengths: list[int]) -> dict[str, int]:
    hist: dict[str, int] = {}
    for n in lengths:
        label = next((f"<={b}" for b in _LENGTH_BINS if n <= b), f">{_LENGTH_BINS[-1]}")
        hist[label] = hist.get(label, 0) + 1
    return {k: hist[k] for k in [f"<={b}" for b in _LENGTH_BINS] + [f">{_LENGTH_BINS[-1]}"] if k in hist}


def _rate_label(rate: float) -> str:
    return next(label for lo, hi, label in _RATE_BINS if (rate == 0.0 if hi == 0.0 else lo < rate <= hi))


def build_report(groups: list[PromptGroup], candidates: list[Candidate], chosen: list[Candidate],
                 checked: dict[str, int], judge_info: Optional[dict], settings: dict) -> dict:
    """The counts of OUTPUT_report.json (see the module docstring)."""
    passed: dict[int, int] = {}
    for c in candidates:
        if c.alive:
            passed[c.group.index] = passed.get(c.group.index, 0) + 1
    per_prompt = [{"index": g.index, "passed": passed.get(g.index, 0), "responses": len(g.responses)}
                  for g in groups]
    rates = [p["passed"] / p["responses"] for p in per_prompt if p["responses"]]
    rate_hist: dict[str, int] = {}
    for r in rates:
        rate_hist[_rate_label(r)] = rate_hist.get(_rate_label(r), 0) + 1
    survivors = sum(c.alive for c in candidates)
    report = {
        "settings": settings,
        "input": {"prompts": len(groups), "responses": len(candidates)},
        "filters": _stage_counts(candidates, checked),
        "selection": {"survivors": survivors, "kept": len(chosen), "dropped": survivors - len(chosen),
                      "prompts_with_output": len({c.group.index for c in chosen})},
        "pass_rate": {"mean": sum(rates) / len(rates) if rates else 0.0, "histogram": rate_hist,
                      "per_prompt": per_prompt},
        "length_histogram": {"unit": "tokens" if all(g.response_tokens is not None for g in groups) else "chars",
                             "kept": _length_histogram([c.length for c in chosen]),
                             "all": _length_histogram([c.length for c in candidates])},
    }
    if judge_info is not None:
        report["judge"] = judge_info
    return report


def emptied_by(candidates: list[Candidate]) -> str:
    """The last stage that dropped candidates: the one that removed everything left."""
    stage = None
    for name in STAGES:
        if any(c.dropped_at == name for c in candidates):
            stage = name
    return stage or "input (no responses)"

"""Held-out evaluation inside a trainer (GRPO's periodic evaluation) with ``mindr1 eval``'s scoring.

The trainer generates; :func:`heldout_metrics` scores the completions with
``scoring.score_item`` and summarises them with ``metrics.summarize``, exactly as ``mindr1 eval``
does for each benchmark, so the held-out curve of a run and an offline ``mindr1 eval`` of a saved
checkpoint (same prompts, greedy, same new-token limit) give the same numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from mindr1.eval import metrics as M
from mindr1.eval.scoring import score_item


def heldout_metrics(prompts: Sequence[str], completions: Sequence[str], golds: Sequence, lengths: Sequence[int],
                    finished: Sequence[bool], checker=None, require_format: bool = False,
                    prefix: str = "eval/") -> tuple[dict, list[dict]]:
    """One completion per prompt -> (``{prefix}pass@1``, ``{prefix}acc`` (the same), ``{prefix}format``,
    response length, truncated share, timeouts; and the per-item records ``report.sample_lines`` writes)."""
    from mindr1.rl.rewards.math_checker import default_checker

    checker = checker or default_checker()
    records = []
    for i, (prompt, completion, gold, length, done) in enumerate(zip(prompts, completions, golds, lengths, finished)):
        rec = score_item(prompt, [completion], gold, checker, require_format, lengths=[int(length)],
                         truncated=[not bool(done)])
        rec.update(model="", benchmark="heldout", id=str(i), index=i, prompt=prompt, gold=gold,
                   responses=[completion], finish_reasons=["stop" if done else "length"])
        records.append(rec)
    s = M.summarize(records, 1)
    out = {f"{prefix}pass@1": s["pass@1"], f"{prefix}acc": s["pass@1"], f"{prefix}pass@1_stderr": s["pass@1_stderr"],
           f"{prefix}format": s["format_rate"], f"{prefix}response_length": s["response_length_mean"],
           f"{prefix}truncated_frac": s["truncated_frac"], f"{prefix}timeouts": float(s["timeouts"])}
    return out, records


def write_heldout_samples(path: Path, records: list[dict], step: Optional[int] = None) -> None:
    """One line per completion (the ``samples.jsonl`` schema of ``mindr1 eval``), written atomically."""
    from mindr1.eval.report import atomic_write_text, sample_lines

    for r in records:
        r["model"] = f"step {step}" if step is not None else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(sample_lines(records, with_token_ids=False)))

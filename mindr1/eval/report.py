"""What ``mindr1 eval`` writes into ``--output-dir``, and the ``.partial`` file it resumes from.

- ``.partial`` (``samples.partial.jsonl``): a header line (the settings) and one line per scored item,
  appended chunk by chunk and fsynced; a killed run restarts after the last complete chunk;
- ``results.json``: metrics per model and benchmark and overall, settings, model and data
  fingerprints, mindr1 version; it holds no wall-clock figure, so a resumed run writes the same file
  as an uninterrupted one (speed goes to ``timing.json``);
- ``results.md``: the tables a person reads; ``samples.jsonl``: one line per sample;
- ``results.png``: a bar chart of pass@1 per benchmark and model (more than one of either).

Every final file is written under a temporary name and renamed when complete; the ``.partial``
file is removed last.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

PARTIAL = "samples.partial.jsonl"


class ResumeError(ValueError):
    """The ``.partial`` file belongs to a run with other settings."""


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class PartialLog:
    """Append-only log of scored items; reading it back drops a torn tail and incomplete chunks."""

    def __init__(self, out_dir: Path, header: dict):
        self.path = out_dir / PARTIAL
        self.header = header
        self.records: list[dict] = []
        if self.path.exists():
            self._load()
        else:
            atomic_write_text(self.path, json.dumps({"header": header}, sort_keys=True) + "\n")

    def _load(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        complete = [ln for ln in lines[:-1] if ln.strip()]  # the last piece is torn or empty
        if not complete:
            atomic_write_text(self.path, json.dumps({"header": self.header}, sort_keys=True) + "\n")
            return
        saved = json.loads(complete[0]).get("header")
        if saved != json.loads(json.dumps(self.header, sort_keys=True)):
            diff = sorted(k for k in set(saved or {}) | set(self.header)
                          if (saved or {}).get(k) != json.loads(json.dumps(self.header)).get(k))
            raise ResumeError(f"{self.path} was written by a run with other settings ({', '.join(diff)}); "
                              "use another --output-dir or delete the file to start over")
        # Keep only whole chunks (a chunk's last record is marked): a resumed chunk is generated
        # again with the same prompts, batch and seed, so it comes out as it would have.
        good, pending = [], []
        for ln in complete[1:]:
            pending.append(json.loads(ln))
            if pending[-1].get("last_of_chunk"):
                good.extend(pending)
                pending = []
        self.records = good
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.write(complete[0].decode() + "\n")
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in good)
            fh.flush()
            os.fsync(fh.fileno())

    def done(self, model: str, benchmark: str) -> int:
        return sum(1 for r in self.records if r["model"] == model and r["benchmark"] == benchmark)

    def append_chunk(self, records: list[dict]) -> None:
        if not records:
            return
        records[-1]["last_of_chunk"] = True
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            fh.flush()
            os.fsync(fh.fileno())
        self.records.extend(records)

    def items(self, model: str, benchmark: str) -> list[dict]:
        out = [r for r in self.records if r["model"] == model and r["benchmark"] == benchmark]
        return sorted(out, key=lambda r: r["index"])

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def sample_lines(records: Iterable[dict], with_token_ids: bool) -> Iterable[str]:
    for r in records:
        for s, response in enumerate(r["responses"]):
            line = {"model": r["model"], "benchmark": r["benchmark"], "id": r["id"], "sample": s,
                    "prompt": r["prompt"], "response": response, "answer": r["answers"][s], "gold": r["gold"],
                    "correct": r["correct"][s], "formatted": r["formatted"][s], "tokens": r["lengths"][s],
                    "finish_reason": r["finish_reasons"][s], "verifier": r["statuses"][s]}
            if with_token_ids:
                line["token_ids"] = r["token_ids"][s]
            yield json.dumps(line, ensure_ascii=False) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value == value else "nan"
    return str(value)


def markdown(results: dict) -> str:
    """Tables: one row per (model, benchmark), then a pass@1 comparison across models."""
    ks = results["settings"]["ks"]
    cols = ["pass@1", "±stderr"] + [f"pass@{k}" for k in ks if k > 1] + [f"maj@{k}" for k in ks] + \
        ["format", "len mean", "len max", "truncated", "timeouts", "items"]
    keys = ["pass@1", "pass@1_stderr"] + [f"pass@{k}" for k in ks if k > 1] + [f"maj@{k}" for k in ks] + \
        ["format_rate", "response_length_mean", "response_length_max", "truncated_frac", "timeouts", "n_items"]
    s = results["settings"]
    lines = [f"# mindr1 eval ({results['mindr1_version']})", "",
             f"{s['n_samples']} sample(s) per question, temperature {s['temperature']}, top-p {s['top_p']}, "
             f"top-k {s['top_k']}, max {s['max_new_tokens']} new tokens, engine {s['engine']}, "
             f"prompt {s['prompt_type'] or ('chat template' if s['apply_chat_template'] else 'plain')}"
             f"{', answers only inside <answer>' if s['require_format'] else ''}.", "",
             "| model | benchmark | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for model, per_bench in results["results"].items():
        for bench, m in per_bench.items():
            lines.append(f"| {model} | {bench} | " + " | ".join(_fmt(m.get(k, "")) for k in keys) + " |")
    models = list(results["results"])
    if len(models) > 1:
        benches = list(next(iter(results["results"].values())))
        lines += ["", "pass@1 by model:", "", "| benchmark | " + " | ".join(models) + " |",
                  "|---|" + "---|" * len(models)]
        for bench in benches:
            lines.append(f"| {bench} | " + " | ".join(_fmt(results["results"][m][bench]["pass@1"]) for m in models)
                         + " |")
    return "\n".join(lines) + "\n"


def bar_chart(results: dict, png: Path) -> None:
    """pass@1 (with its standard error) per benchmark, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["results"])
    benches = [b for b in next(iter(results["results"].values()))]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(benches) + 1), 3.6))
    for i, model in enumerate(models):
        xs = [j + i * width for j in range(len(benches))]
        ys = [results["results"][model][b]["pass@1"] for b in benches]
        es = [results["results"][model][b].get("pass@1_stderr", 0.0) for b in benches]
        ax.bar(xs, ys, width, yerr=es, label=model, capsize=2)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(benches))])
    ax.set_xticklabels(benches, rotation=20, ha="right")
    ax.set_ylabel(f"pass@1 (mean of {results['settings']['n_samples']})")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png)


def write_final(out_dir: Path, results: dict, records: list[dict], with_token_ids: bool) -> None:
    """samples.jsonl, results.md, results.png, then results.json, each atomically."""
    samples = out_dir / "samples.jsonl"
    tmp = samples.with_name(f".{samples.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(sample_lines(records, with_token_ids))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, samples)
    atomic_write_text(out_dir / "results.md", markdown(results))
    n_models, n_benches = len(results["results"]), len(next(iter(results["results"].values())))
    if n_models > 1 or n_benches > 1:  # several benchmarks come with an "overall" entry
        bar_chart(results, out_dir / "results.png")
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")

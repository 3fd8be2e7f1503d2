"""The main curves of a GRPO run as one PNG (matplotlib, Agg backend: no display needed).

Reads ``SAVE/metrics.jsonl`` (a resumed run appends: the last record of a step wins) and draws
reward (train and held-out), accuracy and format rate, response length, zero-variance groups,
KL / entropy / clip fraction, and the time of each phase.
"""
from __future__ import annotations

import json
from pathlib import Path

PANELS = (
    ("reward", ("reward/mean", "eval/reward")),
    ("accuracy / format", ("rewards/acc", "rewards/format", "eval/acc", "eval/format")),
    ("response length", ("response_length/mean", "response_length/max")),
    ("zero-variance groups / truncated", ("reward/zero_std_group_frac", "response_length/truncated_frac")),
    ("KL / entropy / clip", ("actor/kl_loss", "actor/approx_kl", "actor/entropy", "actor/clip_frac")),
    ("seconds per phase", ("timing/generate_s", "timing/reward_s", "timing/reference_s", "timing/old_logp_s",
                           "timing/update_s", "timing/sync_s")),
)


def read_series(jsonl: str | Path) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] with the last record of each (step, metric) kept."""
    latest: dict[str, dict[int, float]] = {}
    with open(jsonl, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            step = int(record.pop("step"))
            for key, value in record.items():
                if isinstance(value, (int, float)):
                    latest.setdefault(key, {})[step] = float(value)
    return {k: sorted(v.items()) for k, v in latest.items()}


def plot_run(jsonl: str | Path, png: str | Path) -> Path | None:
    """Write the curves of ``jsonl`` to ``png`` (atomically); None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not Path(jsonl).exists():
        return None
    series = read_series(jsonl)
    if not series:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for key in keys:
            if key in series:
                steps, values = zip(*series[key])
                ax.plot(steps, values, marker="o" if key.startswith("eval/") else None, markersize=4, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    png = Path(png)
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(png)
    return png


def main(argv: list[str] | None = None) -> int:
    """``python -m mindr1.rl.plot SAVE/metrics.jsonl OUT.png``."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m mindr1.rl.plot METRICS.jsonl OUT.png", file=sys.stderr)
        return 2
    out = plot_run(args[0], args[1])
    print(out or "nothing to plot")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

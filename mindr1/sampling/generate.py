"""``mindr1 generate``: best-of-N generation from a dataset to jsonl (step 1 of rejection sampling).

Takes the flags of the recipe's ``generate_vllm`` script::

    mindr1 generate --pretrain HF_DIR --dataset gsm8k.jsonl --map-keys '{"prompt":"question","gt_answer":"answer"}' \\
        --apply-chat-template --best-of-n 4 --max-new-tokens 512 --temperature 1.0 --output-path out.jsonl

Each output line: ``index`` (the row's position in the dataset), ``prompt`` (the dataset's text),
``input`` (the rendered prompt), ``gt_answer``, ``output`` (N texts: the column
``--task rejection_sampling`` reads with MindSpeed's ``"response":"output"``), ``response_tokens``
(their token counts), ``finish_reasons``, ``prompt_tokens``, ``dataset_size``. ``--iter K``
generates only prompts ``[K*B, (K+1)*B)`` (B = ``--rollout-batch-size``), as the recipe runs one
slice per call (one per node or device group; ``mindr1 rejection-sample --task merge`` joins them).
Every ``--engine-batch-size`` prompts (default B) are appended to ``OUTPUT.partial``; a rerun after
a crash continues after the last complete batch, each batch seeded by its first prompt's index so
the result equals an uninterrupted run, and the file is renamed to ``OUTPUT`` when complete, so
``OUTPUT`` never holds a partial result. The settings that decide the rows are kept beside it in
``OUTPUT.partial.settings.json``: a rerun with other settings (another model, N, temperature, slice
...) is refused by name rather than appended to rows it would not have produced.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

from mindr1.config import Range
from mindr1.sampling.prompts import PromptSource, load_rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mindr1 generate", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The generation flags (also those of ``mindr1 rejection-sample``, where ``required`` is False
    because ``--task merge`` needs no model)."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--pretrain", help="HF model directory (config.json, safetensors, tokenizer)")
    src.add_argument("--load", help="Megatron checkpoint directory; exported to HF first (see --tokenizer)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    p.add_argument("--dataset", "--data", dest="dataset", required=required,
                   help="prompts: a json / jsonl / parquet / arrow file, a directory, a glob or FORMAT@PATH")
    p.add_argument("--output-path", required=required, help="jsonl file to write")
    p.add_argument("--map-keys", default='{"prompt": "prompt", "gt_answer": "gt_answer"}',
                   help='JSON mapping of our fields to dataset columns: {"prompt": ..., "gt_answer": ..., '
                        '"system": ...} ("response" is accepted and ignored, as in the recipe\'s scripts)')
    p.add_argument("--input-template", default=None, help="wrap each text prompt, e.g. 'Question: {}\\nAnswer:'")
    tpl = p.add_mutually_exclusive_group()
    tpl.add_argument("--apply-chat-template", action="store_true", help="render with the tokenizer's chat template")
    tpl.add_argument("--prompt-type", help="a template of configs/finetune/templates.json (e.g. qwen_r1)")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--prompt-max-len", type=int, default=1024, help="longer prompts keep their last tokens")
    p.add_argument("--temperature", type=Range(ge=0).argtype(float), default=None,
                   help="default 1.0 (generation), 0 (judging)")
    p.add_argument("--top-p", type=Range(gt=0, le=1).argtype(float), default=1.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--best-of-n", type=int, default=1, help="responses per prompt")
    p.add_argument("--rollout-batch-size", type=int, default=64, help="prompts per --iter slice")
    p.add_argument("--engine-batch-size", type=int, default=None,
                   help="prompts per engine call and per .partial flush (default: --rollout-batch-size)")
    p.add_argument("--iter", type=int, default=None, help="generate only slice ITER of rollout-batch-size prompts")
    p.add_argument("--max-samples", type=int, default=None, help="use only the first N rows")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--tp-size", type=int, default=1, help="tensor-parallel size of the vLLM engine")
    p.add_argument("--enable-prefix-caching", action="store_true", help="vLLM automatic prefix caching")
    p.add_argument("--engine", choices=["vllm", "hf"], default=None, help="default: vllm on GPU, hf on CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _resolve_model(opts) -> Path:
    if opts.pretrain:
        return Path(opts.pretrain)
    from mindr1.checkpoint.convert import main as convert_main

    out = Path(opts.output_path).with_suffix(".hf")
    if not (out / "config.json").exists():
        code = convert_main(["--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", opts.load,
                             "--save-dir", str(out)] + (["--tokenizer-model", opts.tokenizer] if opts.tokenizer else []))
        if code:
            raise SystemExit(f"mindr1 generate: could not export {opts.load} to HF (exit code {code})")
    return out


def make_engine_for(opts, model_dir: Path, max_model_len: int, prog: str = "mindr1 generate"):
    """The rollout engine the flags ask for (``--engine``, ``--tp-size``, ``--enable-prefix-caching``)."""
    from mindr1.rollout.base import default_engine, make_engine

    kind = opts.engine or ("vllm" if opts.tp_size > 1 else default_engine())
    if kind == "vllm":
        kwargs = {"seed": opts.seed, "tensor_parallel_size": opts.tp_size, "max_model_len": max_model_len,
                  "enable_prefix_caching": bool(opts.enable_prefix_caching)}
        return make_engine(kind, model_dir, **kwargs)
    if opts.tp_size > 1:
        raise SystemExit(f"{prog}: --tp-size > 1 needs --engine vllm")
    return make_engine(kind, model_dir)


def _make_engine(opts, model_dir: Path):
    return make_engine_for(opts, model_dir, opts.prompt_max_len + opts.max_new_tokens)


def _slice(n_rows: int, opts) -> range:
    if opts.iter is None:
        return range(n_rows)
    start = opts.iter * opts.rollout_batch_size
    if start >= n_rows:
        raise SystemExit(f"mindr1 generate: --iter {opts.iter} starts at prompt {start}, past the {n_rows} prompts")
    return range(start, min(start + opts.rollout_batch_size, n_rows))


def _done_rows(partial: Path) -> int:
    """Complete lines already written by an interrupted run (a torn last line is dropped)."""
    if not partial.exists():
        return 0
    lines = partial.read_bytes().split(b"\n")
    complete = [ln for ln in lines[:-1] if ln.strip()]
    with open(partial, "wb") as fh:
        fh.write(b"".join(ln + b"\n" for ln in complete))
    return len(complete)


# Flags that decide which rows are generated and what they hold (not where they go or how they are shown).
RESUME_KEYS = ("pretrain", "load", "tokenizer", "dataset", "map_keys", "input_template", "apply_chat_template",
               "prompt_type", "max_new_tokens", "prompt_max_len", "temperature", "top_p", "top_k",
               "repetition_penalty", "best_of_n", "rollout_batch_size", "engine_batch_size", "iter", "max_samples",
               "seed", "tp_size", "engine")


def resume_settings(opts) -> dict:
    """What a ``.partial`` must have been written with to be continued (paths resolved)."""
    settings = {k: getattr(opts, k, None) for k in RESUME_KEYS}
    for k in ("pretrain", "load", "tokenizer", "dataset"):
        if settings[k] and "*" not in str(settings[k]) and "@" not in str(settings[k]):
            settings[k] = str(Path(settings[k]).resolve())
    settings["engine_batch_size"] = opts.engine_batch_size or opts.rollout_batch_size
    settings["temperature"] = 1.0 if opts.temperature is None else opts.temperature
    return settings


def _check_resume(partial: Path, settings: dict, prog: str = "mindr1 generate") -> None:
    """Refuse to continue a ``.partial`` written with other settings."""
    side = partial.with_name(partial.name + ".settings.json")
    if partial.exists():
        if not side.exists():
            raise SystemExit(f"{prog}: {partial} exists but {side.name} does not, so its settings are unknown; "
                             "move it away (or delete it) to start again")
        try:
            old = json.loads(side.read_text())
        except ValueError as e:
            raise SystemExit(f"{prog}: {side} is not valid JSON ({e}); move {partial} away to start again")
        diff = [f"{k}: {old.get(k)!r} then, {v!r} now" for k, v in settings.items() if old.get(k) != v]
        if diff:
            raise SystemExit(f"{prog}: {partial} was written with other settings ({'; '.join(diff)}); rerun with "
                             "the same flags to continue it, or move it away to start again")


def _record_settings(partial: Path, settings: dict) -> None:
    side = partial.with_name(partial.name + ".settings.json")
    if not partial.exists():
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, side)


def run(opts) -> Path:
    from transformers import AutoTokenizer

    from mindr1.rollout.base import SamplingParams

    model_dir = _resolve_model(opts)
    tokenizer = AutoTokenizer.from_pretrained(str(opts.tokenizer or model_dir))
    rows = load_rows(opts.dataset, opts.max_samples)
    source = PromptSource(tokenizer, _map_keys(opts.map_keys), opts.apply_chat_template, opts.prompt_type,
                          opts.prompt_max_len, opts.dataset, opts.input_template)
    selected = _slice(len(rows), opts)
    out = Path(opts.output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    settings = resume_settings(opts)
    _check_resume(partial, settings)
    done = _done_rows(partial)
    todo = list(selected)[done:]
    items = [source.item(rows[i], i) for i in todo]  # every bad row is reported before any generation
    temperature = 1.0 if opts.temperature is None else opts.temperature
    params = SamplingParams(n=opts.best_of_n, temperature=temperature, top_p=opts.top_p, top_k=opts.top_k,
                            max_tokens=opts.max_new_tokens, repetition_penalty=opts.repetition_penalty,
                            seed=opts.seed)
    stop = [t for t in [tokenizer.eos_token_id] if t is not None]
    engine = _make_engine(opts, model_dir) if todo else None
    bar = _progress(len(selected), done, opts.no_progress)
    step = opts.engine_batch_size or opts.rollout_batch_size
    _record_settings(partial, settings)
    try:
        with open(partial, "a") as fh:
            for start in range(0, len(items), step):
                batch = items[start: start + step]
                params.seed = opts.seed + batch[0].index  # a resumed batch samples as it would have
                params.stop_token_ids = stop
                groups = engine.generate([b.input_ids for b in batch], params)
                for item, group in zip(batch, groups):
                    record = dict(source.record(item, group), dataset_size=len(rows))
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(len(batch))
    finally:
        bar.close()
        if engine is not None:
            engine.close()
    os.replace(partial, out)
    partial.with_name(partial.name + ".settings.json").unlink(missing_ok=True)
    return out


def _map_keys(text: str) -> dict:
    try:
        keys = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--map-keys is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(keys, dict):
        raise SystemExit(f"--map-keys must be a JSON object, got {text!r}")
    return keys


def _progress(total: int, done: int, disabled: bool, desc: str = "generate", unit: str = "prompt"):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit=unit, disable=disabled, file=sys.stderr)


def check_sizes(opts, prog: str) -> None:
    for name in ("best_of_n", "rollout_batch_size", "max_new_tokens", "prompt_max_len", "engine_batch_size"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise SystemExit(f"{prog}: --{name.replace('_', '-')} must be >= 1, got {value}")
    if opts.iter is not None and opts.iter < 0:
        raise SystemExit(f"{prog}: --iter must be >= 0, got {opts.iter}")


def check_output_path(opts, prog: str = "mindr1 generate") -> None:
    """--output-path may not be a directory or one of the inputs (it is replaced when the run ends)."""
    out = Path(opts.output_path).resolve()
    if out.is_dir():
        raise SystemExit(f"{prog}: --output-path {opts.output_path} is a directory; name a .jsonl file")
    for flag in ("dataset", "pretrain", "load", "tokenizer"):
        value = getattr(opts, flag)
        if value and (out == Path(value).resolve() or out.with_suffix(".hf") == Path(value).resolve()):
            raise SystemExit(f"{prog}: --output-path {opts.output_path} would replace the --{flag} input "
                             f"{value}; write to another file")


def main(argv: Optional[list[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    check_sizes(opts, "mindr1 generate")
    check_output_path(opts, "mindr1 generate")
    out = run(opts)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

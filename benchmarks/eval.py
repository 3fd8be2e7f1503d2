"""``mindr1 eval`` throughput (generated tokens/s, scoring included) against the plain engines.

In one run, on the same rendered prompts and the same sampling settings:

- ``--engines hf``: ``mindr1 eval --engine hf`` against plain transformers ``generate`` (left-padded
  batches of ``--batch-size``, KV cache, no logits processors);
- ``--engines vllm``: ``mindr1 eval --engine vllm`` against vLLM's own ``LLM.generate`` over all
  prompts at once (run it in the vLLM venv).

Each side is timed from its first generate call to its last result (model loading excluded);
tokens are the generated ones up to and including the stop token. Prints tokens/s and the ratio.

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
    llm = LLM(model=str(model_dir), skip_tokenizer_init=True, enforce_eager=True, seed=settings.seed, dtype=dtype,
              max_model_len=settings.max_prompt_length + settings.max_new_tokens)
    sp = SamplingParams(n=settings.n_samples, temperature=settings.temperature, top_p=settings.top_p,
                        max_tokens=settings.max_new_tokens, stop_token_ids=stop, ignore_eos=True, detokenize=False)
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    return sum(len(c.token_ids) for o in outs for c in o.outputs) / dt


def main() -> None:
    from mindr1.artifacts import smollm2_dir
    from mindr1.eval.runner import EvalSettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF directory (default: real SmolLM2-135M-Instruct)")
    p.add_argument("--benchmark", default="gsm8k")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--n-samples", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--engines", default="hf", help="comma-separated: hf, vllm")
    args = p.parse_args()
    model_dir = Path(args.model) if args.model else smollm2_dir()
    warm = EvalSettings(max_new_tokens=2, apply_chat_template=True, batch_size=2)
    # The first generate of a process pays one-off kernel set-up (seconds on CPU): pay it before timing either side.
    plain_hf(model_dir, *prompts_for(model_dir, args.benchmark, 2, warm), warm)
    for engine in args.engines.split(","):
        settings = EvalSettings(n_samples=args.n_samples, temperature=args.temperature, top_p=1.0,
                                max_new_tokens=args.max_new_tokens, apply_chat_template=True, engine=engine,
                                batch_size=args.batch_size)
        settings.check()
        prompts, stop = prompts_for(model_dir, args.benchmark, args.limit, settings)
        ours = mindr1_eval(model_dir, args.benchmark, args.limit, settings)
        base = (plain_vllm if engine == "vllm" else plain_hf)(model_dir, prompts, stop, settings)
        name = "vLLM LLM.generate" if engine == "vllm" else "transformers generate"
        print(f"[{engine}] {len(prompts)} prompts x {args.n_samples} x <= {args.max_new_tokens} tokens: "
              f"mindr1 eval {ours:.1f} tok/s, {name} {base:.1f} tok/s, ratio {ours / base:.2f}x", flush=True)


if __name__ == "__main__":
    main()

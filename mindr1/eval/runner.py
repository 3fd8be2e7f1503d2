"""``mindr1 eval``: models x benchmarks -> pass@1 / pass@k / maj@k and the report.

    mindr1 eval --model Qwen2.5-7B=/ckpt/hf --model rl=/ckpt/grpo/iter_0000200 \\
        --benchmarks gsm8k,math500,aime24 --prompt-type qwen_r1 --n-samples 16 --temperature 0.6 \\
        --top-p 0.95 --max-new-tokens 32768 --engine vllm --tp-size 4 --output-dir out/

Order of work: every flag, model and benchmark is checked first (no generation starts on bad
input); then per model: export a Megatron checkpoint if needed, start the engine, and per
benchmark generate chunk after chunk of ``--batch-size`` questions, score each chunk and append
it to the ``.partial`` log. The report is written when everything is scored (see ``report``).

Prompts are rendered by ``mindr1.data.templates.render_prompt`` (the renderer of preprocessing,
so a GRPO held-out set and ``mindr1 eval`` see the same tokens) and tokenized without added
special tokens, as preprocessing does. Sampling seeds are fixed per chunk, so a resumed run
regenerates exactly what an uninterrupted one would have.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from mindr1.eval import benchmarks as B
from mindr1.eval import metrics as M
from mindr1.eval import models as MD
from mindr1.eval import report as R


@dataclass
class EvalSettings:
    """Everything that decides the numbers (recorded in results.json and the .partial header)."""

    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 1024
    seed: int = 1234
    prompt_type: Optional[str] = None
    templates_file: Optional[str] = None
    apply_chat_template: bool = False
    system_prompt: Optional[str] = None
    require_format: bool = False
    engine: str = "hf"
    tp_size: int = 1
    batch_size: int = 64
    max_prompt_length: int = 4096
    ks: list = field(default_factory=list)

    def check(self) -> None:
        bad = []
        if self.n_samples < 1:
            bad.append(f"--n-samples must be >= 1, got {self.n_samples}")
        if self.max_new_tokens <= 0:
            bad.append(f"--max-new-tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            bad.append(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            bad.append(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            bad.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.tp_size < 1 or (self.tp_size > 1 and self.engine != "vllm"):
            bad.append(f"--tp-size {self.tp_size}: must be >= 1, and > 1 only with --engine vllm")
        if self.max_prompt_length < 1:
            bad.append(f"--max-prompt-length must be >= 1, got {self.max_prompt_length}")
        if bad:
            raise ValueError("; ".join(bad))
        self.ks = M.ks_for(self.n_samples)


class PromptRenderer:
    """Question -> prompt text and token ids, through the one renderer (``templates.render_prompt``)."""

    def __init__(self, tokenizer, settings: EvalSettings):
        from mindr1.data.templates import CHAT_TEMPLATE

        self.tokenizer, self.s = tokenizer, settings
        self.template = settings.prompt_type or (CHAT_TEMPLATE if settings.apply_chat_template else None)

    def text(self, question: str) -> str:
        from mindr1.data.templates import render_prompt

        messages = [{"role": "system", "content": self.s.system_prompt}] if self.s.system_prompt else []
        messages.append({"role": "user", "content": question})
        if self.template is None:
            return "\n\n".join(m["content"] for m in messages)
        return render_prompt(self.template, messages, tokenizer=self.tokenizer, path=self.s.templates_file)

    def ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text)
        return ids[-self.s.max_prompt_length:]  # keep the end: the open assistant turn

    def stop_ids(self) -> list[int]:
        from mindr1.data.templates import stop_words

        words = stop_words(self.template, tokenizer=self.tokenizer, path=self.s.templates_file) if self.template else []
        ids = [self.tokenizer.token_to_id(w) for w in words]
        return sorted({i for i in ids if i is not None} | ({self.tokenizer.eos_id} - {None}))


def decode_response(tokenizer, token_ids: list[int], finish_reason: str) -> str:
    """The response text without the stop token that ended it (as GRPO decodes rollouts)."""
    ids = token_ids[:-1] if finish_reason == "stop" and token_ids else token_ids
    return tokenizer.decode(ids)


def _max_positions(hf_dir: Path) -> Optional[int]:
    import json

    try:
        value = json.loads((Path(hf_dir) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def make_engine(settings: EvalSettings, hf_dir: Path):
    from mindr1.rollout.base import make_engine as make

    if settings.engine == "vllm":
        max_model_len = settings.max_prompt_length + settings.max_new_tokens
        limit = _max_positions(hf_dir)
        if limit is not None and max_model_len > limit:
            # vLLM refuses such a length at start-up; say which flags to change instead.
            raise ValueError(f"--max-prompt-length {settings.max_prompt_length} + --max-new-tokens "
                             f"{settings.max_new_tokens} = {max_model_len} exceeds the model's "
                             f"max_position_embeddings {limit} ({hf_dir / 'config.json'})")
        return make("vllm", hf_dir, seed=settings.seed, tensor_parallel_size=settings.tp_size,
                    max_model_len=max_model_len)
    return make(settings.engine, hf_dir, max_batch_size=settings.batch_size)


def chunk_seed(settings: EvalSettings, benchmark_index: int, start: int) -> Optional[int]:
    if settings.temperature == 0:
        return None
    return settings.seed * 1_000_003 + benchmark_index * 100_003 + start


def generate_chunk(engine, renderer, tokenizer, settings, checker, items, seed, stop_ids) -> list[dict]:
    """Generate and score one chunk of items; records for the .partial log (model/benchmark added by the caller)."""
    from mindr1.eval.scoring import score_items
    from mindr1.rollout.base import SamplingParams

    texts = [renderer.text(it.question) for it in items]
    params = SamplingParams(n=settings.n_samples, temperature=settings.temperature, top_p=settings.top_p,
                            top_k=settings.top_k, max_tokens=settings.max_new_tokens, stop_token_ids=stop_ids,
                            seed=seed)
    groups = engine.generate([renderer.ids(t) for t in texts], params)
    responses = [[decode_response(tokenizer, c.token_ids, c.finish_reason) for c in group] for group in groups]
    scored = score_items(texts, responses, [it.answer for it in items], checker, settings.require_format,
                         lengths=[[len(c.token_ids) for c in group] for group in groups],
                         truncated=[[c.finish_reason == "length" for c in group] for group in groups])
    return [{"id": item.id, "prompt": text, "gold": item.answer, "responses": resp,
             "finish_reasons": [c.finish_reason for c in group], "token_ids": [list(c.token_ids) for c in group],
             **sc} for item, text, resp, group, sc in zip(items, texts, responses, groups, scored)]


def warm_up(engine, prompt_ids: list[int], stop_ids: list[int]) -> None:
    """One untimed 2-token generate: the first call of a fresh engine pays one-off set-up (about
    3 s for vLLM on CPU), part of starting the engine like loading the weights, not of throughput."""
    from mindr1.rollout.base import SamplingParams

    engine.generate([prompt_ids], SamplingParams(n=1, temperature=0.0, max_tokens=2, stop_token_ids=stop_ids))


class Progress:
    """tqdm over samples with samples/s and generated tokens/s (ETA from tqdm)."""

    def __init__(self, total: int, done: int, disabled: bool, desc: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, desc=desc, unit="sample", disable=disabled, file=sys.stderr,
                        dynamic_ncols=True)
        self.t0, self.samples, self.tokens = time.perf_counter(), 0, 0

    def update(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens
        dt = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self.samples / dt:.2f} samples/s, {self.tokens / dt:.0f} tok/s", refresh=False)
        self.bar.update(samples)

    def close(self) -> dict:
        self.bar.close()
        dt = time.perf_counter() - self.t0
        return {"seconds": dt, "samples": self.samples, "generated_tokens": self.tokens,
                "samples_per_s": self.samples / dt if dt else 0.0, "tokens_per_s": self.tokens / dt if dt else 0.0}


def evaluate_model(model: MD.EvalModel, benches: list[B.Benchmark], settings: EvalSettings, log: R.PartialLog,
                   checker, workdir: Path, keep_export: bool, progress: bool) -> dict:
    """Generate and score every pending chunk of ``model``; returns its timing."""
    from mindr1.data.tokenizer import TextTokenizer

    todo = [(bi, b) for bi, b in enumerate(benches) if log.done(model.name, b.name) < len(b.items)]
    timing = {}
    if not todo:
        return timing
    hf_dir = MD.export(model, keep_export, workdir)
    tokenizer = TextTokenizer(model.tokenizer or hf_dir)
    renderer = PromptRenderer(tokenizer, settings)
    engine = make_engine(settings, hf_dir)
    try:
        stop_ids = sorted(set(renderer.stop_ids()) | set(engine.eos_token_ids))
        warm_up(engine, renderer.ids(renderer.text(todo[0][1].items[0].question)), stop_ids)
        for bi, bench in todo:
            done = log.done(model.name, bench.name)
            bar = Progress(len(bench.items) * settings.n_samples, done * settings.n_samples, not progress,
                           f"{model.name} {bench.name}")
            for start in range(done, len(bench.items), settings.batch_size):
                items = bench.items[start:start + settings.batch_size]
                records = generate_chunk(engine, renderer, tokenizer, settings, checker, items,
                                         chunk_seed(settings, bi, start), stop_ids)
                for i, r in enumerate(records):
                    r.update(model=model.name, benchmark=bench.name, index=start + i)
                log.append_chunk(records)
                bar.update(len(items) * settings.n_samples, sum(sum(r["lengths"]) for r in records))
            timing[bench.name] = bar.close()
    finally:
        engine.close()
        MD.cleanup(model)
    return timing


def results_dict(models: list[MD.EvalModel], benches: list[B.Benchmark], settings: EvalSettings,
                 log: R.PartialLog) -> dict:
    import mindr1

    results = {}
    for model in models:
        per = {b.name: M.summarize(log.items(model.name, b.name), settings.n_samples) for b in benches}
        if len(benches) > 1:
            per["overall"] = M.overall(per)
        results[model.name] = per
    return {"mindr1_version": mindr1.__version__, "settings": asdict(settings),
            "models": {m.name: m.describe() for m in models},
            "benchmarks": {b.name: {"fingerprint": b.fingerprint, "n_items": len(b.items), "source": b.source,
                                    "settings": b.settings} for b in benches},
            "results": results}


def run(model_flags: list[str], bench_specs: list[str], settings: EvalSettings, out_dir: Path, *,
        map_keys: Optional[dict] = None, limit: Optional[int] = None, subset: str = "first",
        tokenizer: Optional[str] = None, keep_export: bool = False, progress: bool = True,
        save_token_ids: bool = False, verifier_timeout_s: float = 5.0) -> dict:
    """Check everything, generate what the .partial log lacks, write the report; returns results.json's dict."""
    from mindr1.rl.rewards.math_checker import MathChecker

    settings.check()
    benches = [B.load_benchmark(spec, map_keys, limit, subset, settings.seed) for spec in bench_specs]
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise B.BenchmarkError(f"--benchmarks names a benchmark twice: {names}")
    parsed = [MD.parse_model_flag(f) for f in model_flags]
    if len({n for n, _ in parsed}) != len(parsed):
        raise MD.ModelError(f"--model: two models share a name ({[n for n, _ in parsed]}); use NAME=PATH")
    models = [MD.resolve(name, path, Path(tokenizer) if tokenizer else None) for name, path in parsed]
    if settings.prompt_type:
        from mindr1.data.templates import get_template

        get_template(settings.prompt_type, settings.templates_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"settings": asdict(settings), "models": [[m.name, str(m.path.resolve())] for m in models],
              "benchmarks": {b.name: b.fingerprint for b in benches}, "verifier_timeout_s": verifier_timeout_s}
    log = R.PartialLog(out_dir, header)
    checker = MathChecker(timeout_s=verifier_timeout_s)
    timing = {}
    try:
        for model in models:
            timing[model.name] = evaluate_model(model, benches, settings, log, checker, out_dir, keep_export, progress)
    finally:
        checker.close()
    results = results_dict(models, benches, settings, log)
    results["settings"]["verifier_timeout_s"] = verifier_timeout_s
    if timing:
        R.atomic_write_text(out_dir / "timing.json", json.dumps(timing, indent=2) + "\n")
    records = [r for m in models for b in benches for r in log.items(m.name, b.name)]
    R.write_final(out_dir, results, records, save_token_ids)
    log.remove()
    return results

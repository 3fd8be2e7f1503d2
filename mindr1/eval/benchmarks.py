"""Evaluation benchmarks by name: question / gold-answer items, shipped offline.

Named benchmarks come from ``mindr1.artifacts`` (ARTIFACTS.md: the textarena wheel's data):

    gsm8k     GSM8K test, 1,319 items (gold: the number after '#### ')
    math500   MATH-500, 500 items
    aime24    AIME 2024, 30 items
    amc23     AMC 2023, 40 items (gold stored as floats such as 27.0; integral ones become '27')

Two parametrised kinds:

    reasoning_gym:TASK[:key=value,...]   a seeded reasoning-gym generator, e.g.
                                         reasoning_gym:chain_sum:size=64,min_terms=2,max_terms=3
                                         (size defaults to 100, seed to --seed)
    jsonl:PATH                           any json / jsonl / parquet file; --map-keys names its
                                         question / answer columns (default question, answer)

A benchmark is registered once by name (a second registration raises); an unknown name stops
with the list of known ones.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Callable, Optional


class BenchmarkError(ValueError):
    """An unknown benchmark, a missing column or an empty benchmark; the message says which."""


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    answer: str


@dataclass
class Benchmark:
    name: str
    items: list[EvalItem]
    source: str
    settings: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """sha256 of the items (ids, questions, answers): two results are comparable only if equal."""
        digest = hashlib.sha256()
        for it in self.items:
            digest.update(json.dumps([it.id, it.question, it.answer], ensure_ascii=False).encode())
            digest.update(b"\n")
        return digest.hexdigest()


_LOADERS: dict[str, Callable[..., Benchmark]] = {}
_KINDS = ("reasoning_gym:TASK[:key=value,...]", "jsonl:PATH")


def register_benchmark(name: str):
    def wrap(fn):
        if name in _LOADERS:
            raise ValueError(f"benchmark {name!r} is already registered")
        _LOADERS[name] = fn
        return fn

    return wrap


def benchmark_names() -> list[str]:
    return sorted(_LOADERS) + list(_KINDS)


def _gold(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _math_data(name: str) -> "Path":  # noqa: F821
    from mindr1.artifacts import math_data_dir

    return math_data_dir() / name / "test.jsonl"


def _rows_benchmark(name: str, path, question_key: str, answer_key: str, id_key: Optional[str] = None,
                    gold: Callable = _gold) -> Benchmark:
    from mindr1.sampling.prompts import PromptError, load_rows

    try:
        rows = load_rows(path)
    except PromptError as exc:
        raise BenchmarkError(f"benchmark {name}: {exc}") from None
    items = []
    for i, row in enumerate(rows):
        for key, what in ((question_key, "question"), (answer_key, "answer")):
            if key not in row or row[key] is None or str(row[key]).strip() == "":
                raise BenchmarkError(f"{row['_where']}: no {what} column {key!r} (--map-keys {what}); "
                                     f"columns: {sorted(k for k in row if k != '_where')}")
        item_id = str(row[id_key]) if id_key and row.get(id_key) is not None else str(i)
        items.append(EvalItem(item_id, str(row[question_key]), gold(row[answer_key])))
    if not items:
        raise BenchmarkError(f"benchmark {name}: {path} has no rows")
    return Benchmark(name, items, str(path))


@register_benchmark("gsm8k")
def gsm8k(**_) -> Benchmark:
    from mindr1.rl.rewards.answers import extract_gsm8k_answer

    return _rows_benchmark("gsm8k", _math_data("gsm8k"), "question", "answer", "idx",
                           gold=lambda a: extract_gsm8k_answer(str(a)) or _gold(a))


@register_benchmark("math500")
def math500(**_) -> Benchmark:
    return _rows_benchmark("math500", _math_data("math500"), "problem", "answer", "unique_id")


@register_benchmark("aime24")
def aime24(**_) -> Benchmark:
    return _rows_benchmark("aime24", _math_data("aime24"), "problem", "answer", "id")


@register_benchmark("amc23")
def amc23(**_) -> Benchmark:
    return _rows_benchmark("amc23", _math_data("amc23"), "question", "answer", "id")


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def reasoning_gym_benchmark(spec: str, seed: int) -> Benchmark:
    """``TASK[:key=value,...]`` -> ``size`` items of reasoning-gym's generator seeded with ``seed``."""
    task, _, params = spec.partition(":")
    kwargs = {}
    for part in filter(None, params.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise BenchmarkError(f"reasoning_gym:{spec}: expected key=value settings, got {part!r}")
        kwargs[key.strip()] = _parse_value(value.strip())
    size = int(kwargs.pop("size", 100))
    seed = int(kwargs.pop("seed", seed))
    try:
        import reasoning_gym as rg
    except ImportError:
        raise BenchmarkError("reasoning_gym benchmarks need `pip install reasoning-gym==0.1.25`") from None
    try:
        data = rg.create_dataset(task, size=size, seed=seed, **kwargs)
    except Exception as exc:  # reasoning-gym raises plain ValueError / TypeError / AssertionError
        raise BenchmarkError(f"reasoning_gym:{spec}: {type(exc).__name__}: {exc}") from None
    items = [EvalItem(str(i), str(x["question"]), _gold(x["answer"])) for i, x in enumerate(data)]
    return Benchmark(f"reasoning_gym:{task}", items, f"reasoning-gym {task}",
                     settings={"size": size, "seed": seed, **kwargs})


def load_benchmark(spec: str, map_keys: Optional[dict] = None, limit: Optional[int] = None,
                   subset: str = "first", seed: int = 0) -> Benchmark:
    """The benchmark named by ``spec``; ``limit`` keeps the first N items (``subset='random'``: N drawn with ``seed``)."""
    spec = spec.strip()
    if spec.startswith("jsonl:"):
        keys = {"question": "question", "answer": "answer", **(map_keys or {})}
        unknown = set(keys) - {"question", "answer", "id"}
        if unknown:
            raise BenchmarkError(f"--map-keys: unknown field(s) {sorted(unknown)}; known: question, answer, id")
        path = spec[len("jsonl:"):]
        bench = _rows_benchmark(spec, path, keys["question"], keys["answer"], keys.get("id"))
    elif spec.startswith("reasoning_gym:"):
        bench = reasoning_gym_benchmark(spec[len("reasoning_gym:"):], seed)
    elif spec in _LOADERS:
        bench = _LOADERS[spec]()
    else:
        raise BenchmarkError(f"unknown benchmark {spec!r}; known: {', '.join(benchmark_names())}")
    if limit is not None:
        if limit < 1:
            raise BenchmarkError(f"--limit must be >= 1, got {limit}")
        if subset == "random" and limit < len(bench.items):
            keep = sorted(random.Random(seed).sample(range(len(bench.items)), limit))
            bench.items = [bench.items[i] for i in keep]
        else:
            bench.items = bench.items[:limit]
        bench.settings.update(limit=limit, subset=subset)
    return bench


def parse_benchmarks(text: str) -> list[str]:
    """``--benchmarks gsm8k,math500,reasoning_gym:chain_sum:size=8,min_terms=2`` -> specs.

    A comma starts a new benchmark only when what follows is a known name or a kind prefix,
    so reasoning-gym settings may themselves be comma-separated.
    """
    specs: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        starts_new = part in _LOADERS or part.startswith(("jsonl:", "reasoning_gym:")) or "=" not in part
        if specs and not starts_new:
            specs[-1] += "," + part
        else:
            specs.append(part)
    if not specs:
        raise BenchmarkError("--benchmarks is empty")
    return specs

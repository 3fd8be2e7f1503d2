"""The rollout-engine contract shared by every backend (vLLM, HF transformers).

An engine turns prompt token ids into groups of completions and accepts new weights from the
trainer as a stream of HF-named full tensors::

    engine = make_engine("hf", hf_dir)                       # or "vllm"; or a ModelArch
    groups = engine.generate([[1, 2, 3]], SamplingParams(n=4, temperature=1.0, max_tokens=64))
    groups[0][0].token_ids, groups[0][0].logprobs, groups[0][0].finish_reason
    engine.update_weights(iter([("model.norm.weight", tensor), ...]))

Logprobs. ``Completion.logprobs[i]`` is the log-probability of ``token_ids[i]`` under the
model's *unmodified* distribution, ``log_softmax(raw_logits)[token]`` in fp32: before
temperature, top-k / top-p truncation and repetition penalty (vLLM's ``logprobs_mode=
"raw_logprobs"``, its default). vLLM returns only the chosen token's logprob, which cannot be
re-normalised at another temperature afterwards, so both backends report this one quantity; a
GRPO trainer recomputes the behaviour policy's log-probs at its own temperature anyway. For
greedy decoding it is exactly what the trainer's own forward gives (``log_softmax`` of its
logits), which is how a weight sync is checked.

Stopping. Generation stops at any id of ``stop_token_ids`` and, unless ``ignore_eos``, at the
engine's end-of-sequence ids (from the model's generation config / ``ModelArch.eos_token_id``).
The stop token is kept as the last token of ``token_ids``; ``finish_reason`` is ``"stop"`` then,
``"length"`` when ``max_tokens`` ran out.

Seeds. ``seed`` makes a request reproducible on the same backend and weights; the same seed on
different backends does not give the same samples (their samplers differ), greedy decoding does.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch

NamedTensors = Iterable[tuple[str, torch.Tensor]]


@dataclass
class SamplingParams:
    """How to sample one group of completions per prompt."""

    n: int = 1
    """Completions per prompt (the group size of GRPO, N of best-of-N)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; 1 disables it."""
    top_k: int = -1
    """Keep the k most likely tokens; -1 (or 0) disables it."""
    max_tokens: int = 16
    """Most new tokens per completion."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Extra ids that end a completion (kept as its last token)."""
    ignore_eos: bool = False
    """Do not stop at the engine's end-of-sequence ids (``stop_token_ids`` still stop)."""
    repetition_penalty: float = 1.0
    """CTRL-style repetition penalty (1 disables it); not reflected in the returned logprobs."""
    seed: Optional[int] = None
    """Seed of the sampler for this request; None draws from the engine's generator."""

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"SamplingParams.max_tokens must be >= 1, got {self.max_tokens}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"SamplingParams.repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.top_k is None or self.top_k == 0:
            self.top_k = -1
        self.stop_token_ids = [int(t) for t in self.stop_token_ids]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    """One generated continuation of a prompt."""

    token_ids: list[int]
    """New tokens (the prompt excluded); ends with the stop token when finish_reason == 'stop'."""
    logprobs: list[float]
    """log p(token_ids[i]) under the unmodified model distribution (see the module docstring)."""
    finish_reason: str
    """'stop' (a stop / eos id was produced) or 'length' (max_tokens reached)."""

    def __post_init__(self):
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(f"{len(self.token_ids)} tokens but {len(self.logprobs)} logprobs")


Group = list[Completion]
"""The ``n`` completions of one prompt."""


class RolloutEngine(abc.ABC):
    """A generation backend that takes weights from the trainer (see the module docstring)."""

    #: the registry name of the backend ("hf", "vllm")
    kind: str = ""

    @abc.abstractmethod
    def generate(self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Group]:
        """One group of ``params.n`` completions per prompt, in prompt order."""

    @abc.abstractmethod
    def update_weights(self, weights: NamedTensors) -> int:
        """Copy HF-named full tensors into the model in place; returns how many were applied.

        The iterator is consumed lazily (one bucket of the trainer's stream at a time). Names the
        model does not have raise ``KeyError``; rows past the true vocabulary (Megatron's padding)
        are dropped.
        """

    def sleep(self) -> None:
        """Free device memory (weights and KV cache) until :meth:`wake_up`; a no-op where unsupported."""

    def wake_up(self) -> None:
        """Undo :meth:`sleep`."""

    def close(self) -> None:
        """Release the engine's resources."""

    @property
    def eos_token_ids(self) -> list[int]:
        """The ids that end a completion besides ``SamplingParams.stop_token_ids``."""
        return []

    def __enter__(self) -> "RolloutEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_ENGINES: dict[str, Callable[..., RolloutEngine]] = {}


def register_engine(name: str):
    """Class decorator adding a backend to :func:`make_engine`; a name registered twice raises."""

    def wrap(cls):
        if name in _ENGINES:
            raise ValueError(f"rollout engine {name!r} is already registered")
        _ENGINES[name] = cls
        cls.kind = name
        return cls

    return wrap


_BACKEND_MODULES = {"hf": "mindr1.rollout.hf_engine", "vllm": "mindr1.rollout.vllm_engine"}


def engine_names() -> list[str]:
    return sorted(_BACKEND_MODULES)


def default_engine() -> str:
    """vLLM on an accelerator, the HF backend on CPU (no extra install, as fast on tiny models)."""
    from mindr1.accelerator import get_accelerator

    return "hf" if get_accelerator().is_cpu else "vllm"


def make_engine(kind: str | None, model, **kwargs) -> RolloutEngine:
    """Build a backend by name from an HF directory (``str``/``Path``) or a ``ModelArch``.

    A ``ModelArch`` gives an engine with the right shapes and placeholder weights, to be filled
    by :meth:`RolloutEngine.update_weights`. ``kwargs`` go to the backend's constructor.
    """
    import importlib

    kind = kind or default_engine()
    if kind not in _BACKEND_MODULES:
        raise ValueError(f"unknown rollout engine {kind!r}; choose from {engine_names()}")
    if kind not in _ENGINES:
        importlib.import_module(_BACKEND_MODULES[kind])
    return _ENGINES[kind](model, **kwargs)


def vocab_rows(name: str) -> bool:
    """Whether an HF tensor is indexed by vocabulary id along dim 0 (padded by Megatron)."""
    return name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight")


def unpad_vocab(name: str, tensor: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop Megatron's padded vocabulary rows; a tensor with too few rows is an error."""
    if not vocab_rows(name):
        return tensor
    if tensor.shape[0] < vocab_size:
        raise ValueError(f"{name}: {tensor.shape[0]} rows, fewer than the vocabulary size {vocab_size}")
    return tensor[:vocab_size]


def completion_from_tokens(token_ids: list[int], logprobs: list[float], stop_ids: set[int],
                           max_tokens: int) -> Completion:
    """Cut a raw continuation at its first stop id and name why it ended."""
    for i, tok in enumerate(token_ids[:max_tokens]):
        if tok in stop_ids:
            return Completion(token_ids[: i + 1], logprobs[: i + 1], "stop")
    return Completion(token_ids[:max_tokens], logprobs[:max_tokens], "length")


def iter_prompt_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> Iterator[tuple[int, list]]:
    for start in range(0, len(prompts), batch_size):
        yield start, [list(p) for p in prompts[start: start + batch_size]]


def hf_dir_of(model) -> Optional[Path]:
    return Path(model) if isinstance(model, (str, Path)) else None

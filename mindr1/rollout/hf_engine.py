"""Rollout backend on HF transformers ``generate`` (KV cache, left padding): no extra install.

It is the default engine on CPU, where it is as fast as vLLM on tiny models, and the reference
the vLLM backend is checked against. Logprobs are ``log_softmax(raw_logits)`` of the chosen
tokens, computed in fp32 from the raw logits ``generate`` returns (``output_logits``), not from
its processed scores, which are scaled by the temperature, truncated by top-k / top-p and
penalised: the same quantity as vLLM's default ``raw_logprobs`` (see ``mindr1.rollout.base``).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch

from mindr1.accelerator import get_accelerator
from mindr1.rollout.base import (
    Completion,
    Group,
    NamedTensors,
    RolloutEngine,
    SamplingParams,
    completion_from_tokens,
    iter_prompt_batches,
    register_engine,
    unpad_vocab,
)

log = logging.getLogger(__name__)


def _eos_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def build_hf_model(model, dtype: torch.dtype):
    """An HF causal LM from a directory (its weights) or a ModelArch (placeholder weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mindr1.models.arch import ModelArch

    if isinstance(model, ModelArch):
        cfg = model.to_hf_config()
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        hf_model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        return hf_model, _eos_list(model.eos_token_id)
    if isinstance(model, (str, Path)):
        hf_model = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype)
        eos = _eos_list(hf_model.generation_config.eos_token_id) or _eos_list(hf_model.config.eos_token_id)
        return hf_model, eos
    raise TypeError(f"HF engine: expected an HF directory or a ModelArch, got {type(model).__name__}")


@register_engine("hf")
class HFEngine(RolloutEngine):
    """transformers ``generate`` over prompt token ids, ``max_batch_size`` prompts at a time."""

    def __init__(self, model, dtype: Optional[torch.dtype] = None, max_batch_size: int = 64,
                 eos_token_ids: Optional[Sequence[int]] = None, device: Optional[torch.device] = None):
        from transformers import GenerationConfig

        self.accelerator = get_accelerator()
        self.device = device or self.accelerator.device()
        self.dtype = dtype or self.accelerator.default_dtype()
        hf_model, eos = build_hf_model(model, self.dtype)
        # A clean generation config: the checkpoint's defaults (top_k=50, sampling on ...) must not
        # leak into requests, every value is set from SamplingParams.
        hf_model.generation_config = GenerationConfig()
        self.model = hf_model.to(self.device).eval()
        self._eos = list(eos_token_ids) if eos_token_ids is not None else eos
        self.max_batch_size = max_batch_size
        self.vocab_size = self.model.config.vocab_size
        self._params = dict(self.model.state_dict(keep_vars=True))
        self._asleep = False

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self._eos)

    # ------------------------------------------------------------------ generation

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Group]:
        if self._asleep:
            raise RuntimeError("HF engine is asleep; call wake_up() before generate()")
        stop = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self._eos))
        groups: list[Group] = []
        for start, batch in iter_prompt_batches(prompt_token_ids, self.max_batch_size):
            if any(len(p) == 0 for p in batch):
                raise ValueError(f"prompt {start + [len(p) for p in batch].index(0)} is empty")
            seed = None if params.seed is None else params.seed + start
            groups.extend(self._generate_batch(batch, params, sorted(stop), seed))
        return groups

    def _generate_batch(self, batch: list[list[int]], params: SamplingParams, stop: list[int],
                        seed: Optional[int]) -> list[Group]:
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        input_ids, attention_mask = self._left_pad(batch)
        recorder = _ChosenLogprobs()
        processors = [recorder]  # first: it must see the raw logits
        if params.repetition_penalty != 1.0:
            # ours rather than generate's, so that it runs after the recorder (as vLLM's penalties
            # come after its raw logprobs) and before temperature / top-k / top-p
            processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        with torch.no_grad(), _seeded(seed, self.device):
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                      logits_processor=LogitsProcessorList(processors),
                                      **self._generate_kwargs(params, stop))
        new_tokens = out.sequences[:, input_ids.shape[1]:]  # (B*n, T)
        tokens_rows, logprob_rows = new_tokens.tolist(), recorder.finish(new_tokens).tolist()
        stop_set = set(stop)
        groups = []
        for i in range(len(batch)):
            rows = range(i * params.n, (i + 1) * params.n)
            groups.append([completion_from_tokens(tokens_rows[r], logprob_rows[r], stop_set, params.max_tokens)
                           for r in rows])
        return groups

    def _left_pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        attention_mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, prompt in enumerate(batch):
            input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt):] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _generate_kwargs(self, params: SamplingParams, stop: list[int]) -> dict:
        sampling = {}
        if not params.greedy:  # greedy decoding takes no warpers (transformers warns if given)
            sampling = dict(temperature=params.temperature, top_p=params.top_p,
                            top_k=params.top_k if params.top_k > 0 else 0)
        return dict(
            do_sample=not params.greedy,
            **sampling,
            num_return_sequences=params.n,
            max_new_tokens=params.max_tokens,
            min_new_tokens=0,
            # generate stops a row at these ids and pads it afterwards; we cut at the first stop
            # id ourselves, so an empty stop set needs no sentinel.
            eos_token_id=stop or None,
            pad_token_id=stop[0] if stop else 0,
            return_dict_in_generate=True,
            use_cache=True,
        )

    # ------------------------------------------------------------------ weights and memory

    def update_weights(self, weights: NamedTensors) -> int:
        count = 0
        with torch.no_grad():
            for name, tensor in weights:
                param = self._params.get(name)
                if param is None:
                    raise KeyError(f"HF engine: the model has no tensor {name!r}")
                tensor = unpad_vocab(name, tensor, self.vocab_size)
                if tuple(tensor.shape) != tuple(param.shape):
                    raise ValueError(f"HF engine: {name} has shape {tuple(tensor.shape)}, "
                                     f"the model expects {tuple(param.shape)}")
                param.data.copy_(tensor, non_blocking=False)
                count += 1
        return count

    def sleep(self) -> None:
        if not self.accelerator.is_cpu and not self._asleep:
            self.model.to("cpu")
            self.accelerator.empty_cache()
        self._asleep = True

    def wake_up(self) -> None:
        if not self.accelerator.is_cpu and self._asleep:
            self.model.to(self.device)
        self._asleep = False

    def close(self) -> None:
        self._params = {}
        self.model = None
        self.accelerator.empty_cache()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The HF model's tensors (tests compare them after a sync)."""
        return self.model.state_dict()


class _ChosenLogprobs:
    """A logits processor that keeps ``log_softmax(raw logits)`` of each chosen token.

    At step t it sees the token chosen at step t-1 as the last input id, so only one (B, V)
    matrix is alive at a time (``output_logits`` would keep all T of them).
    """

    def __init__(self):
        self._prev_BV: Optional[torch.Tensor] = None
        self._steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prev_BV is not None:
            self._steps.append(self._prev_BV.gather(1, input_ids[:, -1:]))
        self._prev_BV = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens_BT: torch.Tensor) -> torch.Tensor:
        """(B, T) logprobs of the generated tokens."""
        if self._prev_BV is not None:
            last = len(self._steps)
            self._steps.append(self._prev_BV.gather(1, new_tokens_BT[:, last:last + 1]))
            self._prev_BV = None
        return torch.cat(self._steps, dim=1).cpu() if self._steps else torch.zeros(new_tokens_BT.shape[0], 0)


@contextlib.contextmanager
def _seeded(seed: Optional[int], device: torch.device):
    """Seed the sampler for one request without disturbing the caller's RNG streams."""
    if seed is None:
        yield
        return
    devices = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield

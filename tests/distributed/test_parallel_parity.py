"""TP=2, PP=2 and TP2xPP2 give the loss and gradients of TP=1 (fp32, gloo, megatron's 1F1B schedule).

The same random HF checkpoint is loaded into every layout through the HF <-> Megatron adapter;
two micro-batches with partly masked losses run through the pipeline schedule with megatron DDP
(so gradients are finalised as in training: tied embeddings all-reduced between stages), and the
gradients are gathered back to HF names to compare with the unsplit model.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch

from mindr1.models.arch import load_arch
from mindr1.parallel.launch import spawn

from _helpers import gather_hf_named, main_grads, random_hf_checkpoint

FAMILIES = ("tiny-qwen2", "tiny-llama")  # qkv bias + untied, and tied embeddings
LAYOUTS = [(2, 1), (1, 2), (2, 2)]


def _micro_batches(vocab: int):
    from mindr1.training.schedule import causal_batch

    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(2):
        tokens = torch.randint(0, vocab, (2, 12), generator=g)
        loss_mask = (torch.rand(2, 12, generator=g) > 0.3).float()
        loss_mask[:, -1] = 0
        out.append(causal_batch(tokens, loss_mask_BS=loss_mask))
    return out


def _loss(output, batch, n_tokens, vocab_size):
    from mindr1.training.schedule import token_loss_sum

    return token_loss_sum(output, batch, n_tokens, vocab_size)


def _run_layout(rank, world, tp, pp, ckpts: dict):
    from mindr1.models.megatron import build_model, load_hf_weights
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology
    from mindr1.training.optim import attach_grad_finalizer, wrap_ddp
    from mindr1.training.schedule import run_pipeline

    topo = Topology(world, tp=tp, pp=pp)
    results = {}
    for name, hf_dir in ckpts.items():
        arch = load_arch(hf_dir)
        with ParallelContext(topo, seed=1):
            model = build_model(arch, topo)
            load_hf_weights(model, arch, hf_dir, topo)
            ddp = wrap_ddp(model, model.config, use_distributed_optimizer=False)
            attach_grad_finalizer(model.config, [ddp])
            ddp.zero_grad_buffer()
            micro = _micro_batches(arch.vocab_size)
            n_tokens = float(sum(mb["loss_mask"].sum() for mb in micro))
            out = run_pipeline([ddp], micro, partial(_loss, n_tokens=n_tokens, vocab_size=arch.vocab_size))
            loss = sum(float(o["loss_sum"]) for o in out) / n_tokens if out else None
            losses = [None] * world
            torch.distributed.all_gather_object(losses, loss)
            grads = gather_hf_named(arch, main_grads(ddp), topo)
            results[name] = {"loss": next(x for x in losses if x is not None), "grads": grads}
    return results if rank == 0 else None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return {name: str(random_hf_checkpoint(load_arch(name), root / name, seed=3)) for name in FAMILIES}


@pytest.fixture(scope="module")
def reference(checkpoints):
    return spawn(_run_layout, 1, 1, 1, checkpoints, timeout_s=600)[0]


@pytest.mark.parametrize("tp,pp", LAYOUTS, ids=[f"tp{t}_pp{p}" for t, p in LAYOUTS])
def test_loss_and_grads_match_tp1(checkpoints, reference, tp, pp):
    got = spawn(_run_layout, tp * pp, tp, pp, checkpoints, timeout_s=600)[0]
    for name in FAMILIES:
        ref, res = reference[name], got[name]
        assert abs(res["loss"] - ref["loss"]) < 1e-5, (name, res["loss"], ref["loss"])
        assert set(res["grads"]) == set(ref["grads"]), name
        for key, g_ref in ref["grads"].items():
            diff = (res["grads"][key] - g_ref).abs().max().item()
            assert diff < 1e-5, f"{name} {key}: max |grad diff| {diff:.2e} at TP={tp} PP={pp}"
        # The gradients are not trivially zero.
        assert max(g.abs().max().item() for g in ref["grads"].values()) > 1e-3

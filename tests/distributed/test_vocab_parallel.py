"""Vocab-parallel log-prob and entropy (``mindr1.models.vocab_parallel``) against the gathered versions.

Reference: the whole (unpadded) vocabulary in one tensor, ``log_softmax`` and
``algos.entropy_from_logits`` (what the actor computed before, after all-gathering the TP shards).
Each TP rank gets its shard of a padded vocabulary; values and the gradients of a loss mixing both
outputs must agree within 1e-6 (fp32), at TP=1 and TP=2, in several chunks. At TP=1 the log-probs
and their gradients are also bit-equal to megatron's ``vocab_parallel_cross_entropy`` on the masked
logits (the path the SFT and GRPO losses took before). A memory test bounds the peak of one
micro-batch's log-prob + entropy on a 50k vocabulary.
"""
from __future__ import annotations

import os
import re

import pytest
import torch

from mindr1.parallel.launch import spawn

B, S, VOCAB, PADDED = 2, 9, 45, 48  # 3 padded rows; TP=2 shards of 24 (the second has 21 real rows)


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, S, PADDED, generator=gen, dtype=torch.float64).float() * 4
    labels = torch.randint(0, VOCAB, (B, S), generator=gen)
    labels[0, 0] = -100  # an ignored position (megatron's target mask)
    g_logp = torch.randn(B, S, generator=gen)
    g_ent = torch.randn(B, S, generator=gen)
    return logits, labels, g_logp, g_ent


def _reference(temperature: float):
    from mindr1.rl.algos import entropy_from_logits

    logits, labels, g_logp, g_ent = _inputs()
    leaf = logits.clone().requires_grad_(True)
    z = leaf[..., :VOCAB] / temperature
    logp_all = torch.log_softmax(z, dim=-1)
    logp = logp_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    # megatron's value at an ignored target: -log sum exp(z - max z) (a constant shift, no target term)
    logp = torch.where(labels >= 0, logp, z.max(dim=-1).values.detach() - torch.logsumexp(z, dim=-1))
    ent = entropy_from_logits(z)
    ((logp * g_logp).sum() + (ent * g_ent).sum()).backward()
    return logp.detach(), ent.detach(), leaf.grad


def vp_worker(rank, world, temperature, consume, chunk_bytes):
    from mindr1.models.vocab_parallel import vocab_parallel_logp_entropy
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology

    logits, labels, g_logp, g_ent = _inputs()
    local = PADDED // world
    with ParallelContext(Topology(world_size=world, tp=world, pp=1)):
        leaf = logits[..., rank * local:(rank + 1) * local].clone().requires_grad_(True)
        out = leaf * 1.0  # a non-leaf, as the model's output is
        logp, ent = vocab_parallel_logp_entropy(out, labels, VOCAB, temperature, with_entropy=True,
                                                consume_logits=consume, chunk_bytes=chunk_bytes)
        ((logp * g_logp).sum() + (ent * g_ent).sum()).backward()
        no_grad = None
        with torch.no_grad():
            no_grad = vocab_parallel_logp_entropy(logits[..., rank * local:(rank + 1) * local], labels, VOCAB,
                                                  temperature, with_entropy=True, chunk_bytes=chunk_bytes)
    return {"logp": logp.detach(), "ent": ent.detach(), "grad": leaf.grad, "logp_ng": no_grad[0],
            "ent_ng": no_grad[1]}


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("temperature, consume", [(1.0, False), (1.0, True), (0.7, False), (0.7, True)])
def test_logp_entropy_equal_gathered_versions(tp, temperature, consume):
    ref_logp, ref_ent, ref_grad = _reference(temperature)
    chunk_bytes = 4 * (PADDED // tp) * 4  # 4 positions a chunk: 5 chunks of the 18 positions
    results = spawn(vp_worker, tp, temperature, consume, chunk_bytes, timeout_s=300, threads=1)
    grad = torch.cat([r["grad"] for r in results], dim=-1)
    for r in results:
        torch.testing.assert_close(r["logp"], ref_logp, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(r["ent"], ref_ent, rtol=1e-6, atol=1e-6)
        assert torch.equal(r["logp_ng"], r["logp"]) and torch.equal(r["ent_ng"], r["ent"])
    torch.testing.assert_close(grad[..., :VOCAB], ref_grad[..., :VOCAB], rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(grad[..., VOCAB:]) == 0  # padded rows get no gradient


def megatron_bits_worker(rank, world, temperature):
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    from mindr1.models.vocab_parallel import vocab_parallel_logprobs
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology

    logits, labels, g_logp, _ = _inputs(1)
    results = []
    with ParallelContext(Topology(world_size=1, tp=1, pp=1)):
        for new in (False, True):
            leaf = logits.clone().requires_grad_(True)
            if new:
                logp = vocab_parallel_logprobs(leaf * 1.0, labels, VOCAB, temperature, consume_logits=True)
            else:  # the previous path: temperature, padded rows -inf by concatenation, megatron's CE
                z = (leaf * 1.0).float() / temperature
                z = torch.cat([z[..., :VOCAB], torch.full_like(z[..., VOCAB:], float("-inf"))], dim=-1)
                logp = -vocab_parallel_cross_entropy(z, labels)
            (logp * g_logp).sum().backward()
            results.append((logp.detach(), leaf.grad))
    return results


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logp_bit_equal_megatron_cross_entropy_at_tp1(temperature):
    (old_logp, old_grad), (new_logp, new_grad) = spawn(megatron_bits_worker, 1, temperature, timeout_s=300,
                                                       threads=1)[0]
    assert torch.equal(old_logp, new_logp)
    assert torch.equal(old_grad, new_grad)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"{field}:\s+(\d+)", fh.read()).group(1))


def memory_worker(rank, world, n_tokens, vocab):
    import gc

    from mindr1.models.vocab_parallel import vocab_parallel_logp_entropy
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology

    with ParallelContext(Topology(world_size=1, tp=1, pp=1)):
        leaf = torch.randn(1, n_tokens, vocab, requires_grad=True)
        logits = leaf * 1.0
        labels = torch.randint(0, vocab - 7, (1, n_tokens))
        gc.collect()
        out = {}
        for name, grad in (("no_grad", False), ("grad", True)):
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # VmHWM := current resident size
            before = _rss_kib("VmRSS")
            with torch.set_grad_enabled(grad):
                logp, ent = vocab_parallel_logp_entropy(logits, labels, vocab - 7, with_entropy=True)
            out[name] = (_rss_kib("VmHWM") - before) * 1024
            del logp, ent
            gc.collect()
    return {**out, "shard": logits.numel() * 4}


@pytest.mark.slow
def test_logp_entropy_peak_memory_within_one_and_a_half_shards():
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)  # freed buffers leave the resident set at once
    try:
        result = spawn(memory_worker, 1, 2048, 50_304, timeout_s=300, threads=1)[0]
    finally:
        os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
    shard = result["shard"]  # 412 MB of fp32 logits
    assert result["grad"] <= 1.5 * shard, (result, shard)  # the kept softmax (1x) + chunk temporaries
    assert result["no_grad"] <= 0.5 * shard, (result, shard)  # only chunk temporaries

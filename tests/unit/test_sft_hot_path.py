"""SFT hot-path changes (issue 19) compute exactly what they replaced: bit-equal losses and gradients."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("vocab, padded", [(50, 50), (45, 50)])
def test_consumed_logits_give_the_same_loss_and_grads(mcore_single_process, vocab, padded):
    from mindr1.models.vocab_parallel import vocab_parallel_logprobs
    from mindr1.training.schedule import token_loss_sum

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(2, 7, padded, generator=gen) * 3
    labels = torch.randint(0, vocab, (2, 7), generator=gen)
    batch = {"labels": labels, "loss_mask": (torch.rand(2, 7, generator=gen) > 0.3).float()}
    results = []
    for consume in (False, True):
        leaf = base.clone().requires_grad_(True)
        logits = leaf * 1.0  # a non-leaf, as the model's output is
        if consume:
            loss, n, metrics = token_loss_sum(logits, batch, global_valid_tokens=9.0, vocab_size=vocab)
        else:  # the previous path: the logits copied before megatron's in-place cross entropy
            logp = vocab_parallel_logprobs(logits, labels, vocab)
            mask = batch["loss_mask"]
            loss = -(logp * mask).sum() / 9.0
        loss.backward()
        results.append((loss.detach(), leaf.grad.clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_cached_causal_mask_is_megatrons(mcore_single_process):
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils

    for sq in (1, 5, 64):
        want = torch.triu(torch.ones(sq, sq), diagonal=1).bool()  # megatron's own expression
        assert torch.equal(utils.get_default_causal_mask(sq), want)
        assert torch.equal(fused_softmax.get_default_causal_mask(sq), want)
    assert utils.get_default_causal_mask(64) is utils.get_default_causal_mask(64)  # built once


def test_gpt_model_loss_path_is_bit_identical(mcore_single_process):
    """SFT with labels into GPTModel (no vocabulary padding, fp32) == logits + our masked cross entropy."""
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from mindr1.models.arch import ModelArch
    from mindr1.parallel.topology import Topology
    from mindr1.models.megatron import build_model
    from mindr1.training.data import collate
    from mindr1.training.schedule import token_loss_sum, token_nll_loss_sum

    arch = ModelArch.from_yaml("tiny-smol").replace(num_layers=2)
    assert arch.padded_vocab(1) == arch.vocab_size
    model_parallel_cuda_manual_seed(1234)
    model = build_model(arch, Topology(1, 1, 1), torch.float32)
    gen = torch.Generator().manual_seed(0)
    samples = []
    for n in (9, 14, 6):
        ids = torch.randint(0, arch.vocab_size, (n,), generator=gen).numpy()
        labels = ids.copy()
        labels[: n // 3] = -100
        samples.append({"input_ids": ids, "labels": labels})
    batch = collate(samples, 64)
    results = []
    for via_model in (False, True):
        model.zero_grad(set_to_none=True)
        args = (batch["tokens"], batch["position_ids"], batch["attention_mask"])
        if via_model:
            loss, _, metrics = token_nll_loss_sum(model(*args, labels=batch["labels"]), batch, 7.0)
        else:
            loss, _, metrics = token_loss_sum(model(*args), batch, 7.0, arch.vocab_size)
        loss.backward()
        results.append((loss.detach(), metrics["loss_sum"], [p.grad.clone() for p in model.parameters()]))
    (l0, s0, g0), (l1, s1, g1) = results
    assert torch.equal(l0, l1) and torch.equal(s0, s1)
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))

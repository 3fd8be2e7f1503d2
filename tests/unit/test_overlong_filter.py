"""DAPO overlong filtering: rows with ``loss_mask_B`` 0 (truncated responses) are out of the actor's loss.

The actor's real loss function (``grpo_loss_fn``, megatron's vocab-parallel log-probs) on a micro-batch
of 4 rows with rows 1 and 3 filtered gives exactly the loss of the 2 kept rows alone, and no gradient
reaches the filtered rows' logits; the controller's mask is ``finished_B`` (see ``controller.collect``).
"""
from __future__ import annotations

import pytest
import torch

V, S, R = 23, 9, 4


def _settings(agg: str):
    from mindr1.rl.workers.actor import ActorSettings

    return ActorSettings(save=None, micro_batch_size=4, mini_batch_size=4, ppo_epochs=1, shuffle=False,
                         temperature=1.0, clip_low=0.2, clip_high=0.28, clip_ratio_c=3.0, policy_loss="clip",
                         old_logp_from_engine=False, mismatch_threshold=1.0, entropy_coef=0.0, entropy_metric_interval=1,
                         kl_kind="low_var_kl",
                         agg=agg, max_response_length=R, lr=1e-6, min_lr=0.0, lr_decay_style="constant",
                         lr_warmup_iters=0, lr_decay_iters=1, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
                         clip_grad=1.0, use_distributed_optimizer=False)


def _micro_batch(rows):
    from mindr1.rl.batch import response_positions_BR

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (4, S), generator=gen)
    prompt_len = torch.tensor([4, 5, 3, 5])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    mb = {"labels": torch.roll(tokens, -1, 1), "positions_BR": response_positions_BR(prompt_len, R),
          "response_mask_BR": mask, "advantages_B": torch.tensor([1.0, -0.5, -1.0, 2.0]),
          "old_logp_BR": -torch.rand(4, R, generator=gen) * 3}
    logits = torch.randn(4, S, V, generator=gen) * 2
    return {k: v[rows] for k, v in mb.items()}, logits[rows]


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean"])
def test_filtered_rows_leave_the_loss_and_get_no_gradient(mcore_single_process, agg):
    from mindr1.rl.workers.actor import grpo_loss_fn

    s = _settings(agg)
    kept = torch.tensor([0, 2])
    full, logits_full = _micro_batch(torch.arange(4))
    full["loss_mask_B"] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    part, logits_part = _micro_batch(kept)
    n_tokens = float((full["response_mask_BR"] * full["loss_mask_B"].unsqueeze(1)).sum())  # num_loss_tokens
    common = dict(s=s, vocab_size=V, kl_coef=0.0, num_valid_tokens=n_tokens, num_sequences=2.0,
                  num_response_tokens=n_tokens)

    leaf_full = logits_full.clone().requires_grad_(True)
    loss_full, count_full, _ = grpo_loss_fn(leaf_full * 1.0, full, **common)
    loss_full.backward()
    leaf_part = logits_part.clone().requires_grad_(True)
    loss_part, count_part, _ = grpo_loss_fn(leaf_part * 1.0, part, **common)
    loss_part.backward()

    assert int(count_full) == int(count_part) == int(n_tokens)
    assert torch.allclose(loss_full, loss_part, atol=1e-6, rtol=0)
    assert loss_full.abs() > 0
    assert torch.count_nonzero(leaf_full.grad[torch.tensor([1, 3])]) == 0   # the filtered rows
    assert torch.allclose(leaf_full.grad[kept], leaf_part.grad, atol=1e-6, rtol=0)

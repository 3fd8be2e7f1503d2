"""Log-probs and entropy from vocab-parallel logits, without gathering the vocabulary.

Each TP rank holds logits ``(B, S, V/TP)`` for its slice of a vocabulary that megatron pads to a
multiple of ``make_vocab_size_divisible_by * TP``. Both quantities need only per-position
reductions over the vocabulary, so each rank reduces its slice and one all-reduce over the TP
group combines them, as megatron's ``vocab_parallel_cross_entropy`` does:

    logZ      = log sum_j exp(z_j - m)                (m: the max over all slices)
    log p(y)  = (z_y - m) - logZ
    entropy   = logZ - sum_j p_j (z_j - m)            (= -sum_j p_j log p_j)

``z`` is the logits divided by the temperature; padded vocabulary rows are set to -inf so they
take no part (otherwise results would depend on TP and differ from HF and the rollout engine).

The work goes in chunks of positions, so the temporaries are bounded by ``chunk_bytes`` whatever
the sequence length. With gradients the softmax of every position is kept for backward (one
fp32 copy of the logits shard, written chunk by chunk into one buffer, or into the logits
themselves when the caller hands them over with ``consume_logits``); without, nothing is kept.
The backward needs no communication: the gradient of position ``t`` on a rank's slice is
``g_logp (onehot(y) - p) - g_H p (log p + H)``, divided by the temperature.

The log-prob operations are megatron-core's own (``VocabParallelCrossEntropy``'s static steps),
applied to the same rows, so log-probs and their gradients are bit-equal to
``-vocab_parallel_cross_entropy`` of the masked logits.
"""
from __future__ import annotations

from typing import Optional

import torch

CHUNK_BYTES = 64 * 2**20  # fp32 bytes of logits per chunk (bounds the temporaries)


def _chunk_rows(n_rows: int, v_local: int, chunk_bytes: int) -> int:
    return max(1, min(n_rows, chunk_bytes // max(1, 4 * v_local)))


def _tp():
    from megatron.core import parallel_state as ps

    return ps.get_tensor_model_parallel_group(), ps.get_tensor_model_parallel_rank(), \
        ps.get_tensor_model_parallel_world_size()


class _LogpEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_NV, target_N, vocab_size: int, temperature: float, with_entropy: bool,
                consume: bool, chunk_bytes: int, keep: bool):
        from megatron.core.tensor_parallel.cross_entropy import VocabParallelCrossEntropy as VPCE
        from megatron.core.tensor_parallel.utils import VocabUtility

        ctx.set_materialize_grads(False)
        group, rank, world = _tp()
        n_rows, v_local = logits_NV.shape
        start, end = VocabUtility.vocab_range_from_per_partition_vocab_size(v_local, rank, world)
        n_real = max(0, min(v_local, vocab_size - start))
        if keep and consume and logits_NV.dtype == torch.float32:
            soft_NV = logits_NV  # the caller is done with the logits: megatron's in-place way, no copy
        elif keep:
            soft_NV = torch.empty(n_rows, v_local, dtype=torch.float32, device=logits_NV.device)
        else:
            soft_NV = None
        logp_N = torch.empty(n_rows, dtype=torch.float32, device=logits_NV.device)
        ent_N = torch.empty(n_rows if with_entropy else 0, dtype=torch.float32, device=logits_NV.device)
        masks, targets = [], []
        step = _chunk_rows(n_rows, v_local, chunk_bytes)
        for a in range(0, n_rows, step):
            b = min(n_rows, a + step)
            src = logits_NV[a:b]
            z = soft_NV[a:b] if soft_NV is not None else torch.empty(b - a, v_local, dtype=torch.float32,
                                                                        device=logits_NV.device)
            if temperature != 1.0:
                torch.div(src.float(), temperature, out=z)  # in place when z is src (same values)
            elif z.data_ptr() != src.data_ptr():
                z.copy_(src)
            if n_real < v_local:
                z[:, n_real:] = float("-inf")
            z, z_max = VPCE.calculate_logits_max(z)
            torch.distributed.all_reduce(z_max, op=torch.distributed.ReduceOp.MAX, group=group)
            target_mask, masked_target_1d, predicted, sum_exp, exp_z = VPCE.calculate_predicted_logits(
                z, target_N[a:b], z_max, start, end)
            # sum_j e_j (z_j - m) = sum_j e_j log e_j, 0 at the padded rows (e = 0)
            parts = [predicted, sum_exp] + ([torch.special.xlogy(exp_z, exp_z).sum(dim=-1)] if with_entropy else [])
            stacked = torch.stack(parts)
            torch.distributed.all_reduce(stacked, op=torch.distributed.ReduceOp.SUM, group=group)
            predicted, sum_exp = stacked[0], stacked[1]
            exp_z, loss = VPCE.calculate_cross_entropy_loss(exp_z, predicted, sum_exp)
            torch.neg(loss, out=logp_N[a:b])
            if with_entropy:
                ent_N[a:b] = torch.log(sum_exp) - stacked[2] / sum_exp
            masks.append(target_mask)
            targets.append(masked_target_1d)
            del z, exp_z, parts, stacked  # before the next chunk's buffer: at most one chunk's temporaries live
        if not with_entropy:
            ctx.mark_non_differentiable(ent_N)
        if keep:
            ctx.save_for_backward(soft_NV, torch.cat(masks), torch.cat(targets), ent_N)
            ctx.meta = (temperature, with_entropy, n_real, step, logits_NV.dtype)
        return logp_N, ent_N

    @staticmethod
    def backward(ctx, g_logp_N, g_ent_N):
        from megatron.core.tensor_parallel.cross_entropy import VocabParallelCrossEntropy as VPCE

        soft_NV, target_mask_N, masked_target_N, ent_N = ctx.saved_tensors
        temperature, with_entropy, n_real, step, dtype = ctx.meta
        if not with_entropy:
            g_ent_N = None
        for a in range(0, soft_NV.shape[0], step):
            b = min(soft_NV.shape[0], a + step)
            p = soft_NV[a:b]
            ent_term = None
            if g_ent_N is not None:  # dH/dz = -p (log p + H)
                ent_term = torch.special.xlogy(p, p).add_(p * ent_N[a:b].unsqueeze(-1))
                ent_term.mul_(g_ent_N[a:b].unsqueeze(-1))
            if g_logp_N is not None:  # megatron's own gradient steps: (p - onehot) * d loss, loss = -logp
                grad_2d, arange_1d, update, grad = VPCE.prepare_gradient_calculation_operands(p, target_mask_N[a:b])
                VPCE.calculate_gradients(grad_2d, arange_1d, masked_target_N[a:b], update, grad,
                                         torch.neg(g_logp_N[a:b]))
            else:
                p.zero_()
            if ent_term is not None:
                p.sub_(ent_term)
            if temperature != 1.0:
                p.div_(temperature)
            if n_real < p.shape[1]:
                p[:, n_real:] = 0.0
        return soft_NV.to(dtype), None, None, None, None, None, None, None


def vocab_parallel_logp_entropy(logits_BSV: torch.Tensor, labels_BS: torch.Tensor, vocab_size: int,
                                temperature: float = 1.0, with_entropy: bool = False, consume_logits: bool = False,
                                chunk_bytes: int = CHUNK_BYTES) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(log p(label), entropy or None)``, each ``(B, S)`` fp32 and differentiable, from vocab-parallel logits.

    ``consume_logits``: the caller never reads ``logits_BSV`` again (a loss function given the
    model's output), so fp32 logits become the kept softmax in place (no copy).
    """
    B, S, V = logits_BSV.shape
    keep = torch.is_grad_enabled() and logits_BSV.requires_grad  # the softmax is kept only for a backward
    logp_N, ent_N = _LogpEntropy.apply(logits_BSV.reshape(B * S, V), labels_BS.reshape(B * S), vocab_size,
                                       float(temperature), bool(with_entropy), bool(consume_logits), int(chunk_bytes),
                                       keep)
    return logp_N.view(B, S), (ent_N.view(B, S) if with_entropy else None)


def vocab_parallel_logprobs(logits_BSV: torch.Tensor, labels_BS: torch.Tensor, vocab_size: int,
                            temperature: float = 1.0, consume_logits: bool = False) -> torch.Tensor:
    """log p(label) from vocab-parallel logits (padded rows excluded), differentiable, fp32."""
    return vocab_parallel_logp_entropy(logits_BSV, labels_BS, vocab_size, temperature,
                                       consume_logits=consume_logits)[0]


def gather_vocab_parallel(logits_BSV: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """All-gather vocab-parallel logits over TP and drop the padded vocabulary rows (tests, greedy reference)."""
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    full = gather_from_tensor_model_parallel_region(logits_BSV)
    return full[..., :vocab_size]

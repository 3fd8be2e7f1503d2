"""Forward/backward of micro-batches through megatron-core's pipeline schedules (1F1B, interleaved).

One small layer over ``get_forward_backward_func``: a micro-batch is a dict of tensors
(``tokens``, ``position_ids``, ``labels``, ``loss_mask``, optional ``attention_mask``) and a loss
function turns the last stage's vocab-parallel logits ``(B, S, V/TP)`` into
``(loss, num_tokens, metrics)``. The loss is computed here rather than inside GPTModel so that
padded vocabulary rows can be excluded from the softmax (see ``models.vocab_parallel``). Losses are
normalised by a global valid-token count passed in by the caller, never by the number of
micro-batches, so results do not change with micro-batch size, accumulation or DP size
(the TransformerConfig is built with ``calculate_per_token_loss=True`` so the schedule does not
rescale).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Iterable, Optional

import torch

LossFn = Callable[[torch.Tensor, dict], tuple]


def token_loss_sum(logits_BSV: torch.Tensor, batch: dict, global_valid_tokens: float, vocab_size: int) -> tuple:
    """SFT loss: per-token cross entropy summed over ``loss_mask``, divided by the global valid-token count."""
    from mindr1.models.vocab_parallel import vocab_parallel_logprobs

    logp_BS = vocab_parallel_logprobs(logits_BSV, batch["labels"], vocab_size, consume_logits=True)
    mask_BS = batch["loss_mask"].to(logp_BS.dtype)
    loss_sum = -(logp_BS * mask_BS).sum()
    n_tokens = mask_BS.sum().detach()
    loss = loss_sum / global_valid_tokens
    return loss, n_tokens.to(torch.int), {"loss_sum": loss_sum.detach(), "tokens": n_tokens}


def token_nll_loss_sum(nll_BS: torch.Tensor, batch: dict, global_valid_tokens: float) -> tuple:
    """:func:`token_loss_sum` from GPTModel's own per-token cross entropy (``run_pipeline(...,
    labels_to_model=True)``): the same numbers bit for bit where no vocabulary row is padding and the
    logits are fp32, without the (B, S, V) copy GPTModel makes when it returns logits."""
    mask_BS = batch["loss_mask"].to(nll_BS.dtype)
    loss_sum = (nll_BS * mask_BS).sum()
    n_tokens = mask_BS.sum().detach()
    loss = loss_sum / global_valid_tokens
    return loss, n_tokens.to(torch.int), {"loss_sum": loss_sum.detach(), "tokens": n_tokens}


def _call_loss(loss_fn, output, batch):
    return loss_fn(output, batch)


def run_pipeline(model_chunks: list, micro_batches: list[dict], loss_fn: LossFn, forward_only: bool = False,
                 labels_to_model: bool = False) -> list:
    """Run the schedule over ``micro_batches``; returns the loss functions' metrics (last stage only).

    ``labels_to_model``: the model gets the batch's labels and returns its per-token cross entropy
    (B, S) instead of logits (see :func:`token_nll_loss_sum`).

    Every stage must be given micro-batches of the same shapes (first stage uses tokens, last stage
    labels/loss_mask, all of them the sequence length for p2p shapes).
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    if not micro_batches:
        return []
    seq_length = max(mb["tokens"].shape[1] for mb in micro_batches)
    micro_batch_size = micro_batches[0]["tokens"].shape[0]
    forward_backward = get_forward_backward_func()
    n_chunks = len(model_chunks)
    iterators: Iterable
    if n_chunks == 1:
        iterators = iter(micro_batches)
        models = model_chunks[0]
    else:
        iterators = [iter(micro_batches) for _ in range(n_chunks)]
        models = model_chunks

    def step(data_iterator, model):
        batch = next(data_iterator)
        if labels_to_model:
            output = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"])
        else:
            output = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"))
        return output, partial(_call_loss, loss_fn, batch=batch)

    return forward_backward(
        forward_step_func=step,
        data_iterator=iterators,
        model=models,
        num_microbatches=len(micro_batches),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
    )


def causal_batch(tokens_BS: torch.Tensor, labels_BS: Optional[torch.Tensor] = None,
                 loss_mask_BS: Optional[torch.Tensor] = None, segment_ids_BS: Optional[torch.Tensor] = None,
                 device=None) -> dict:
    """A micro-batch dict for next-token training on ``tokens``.

    ``labels`` default to the tokens shifted left (last position masked). ``segment_ids`` (1-based
    sample ids of packed sequences, 0 for padding) make position ids restart per sample and give a
    block-diagonal causal mask so attention never crosses samples.
    """
    B, S = tokens_BS.shape
    if labels_BS is None:
        labels_BS = torch.cat([tokens_BS[:, 1:], torch.zeros_like(tokens_BS[:, :1])], dim=1)
        default_mask = torch.ones(B, S, dtype=torch.float32)
        default_mask[:, -1] = 0
    else:
        default_mask = (labels_BS != -100).float()
    loss_mask_BS = default_mask if loss_mask_BS is None else loss_mask_BS.float()
    labels_BS = labels_BS.clamp(min=0)
    batch = {"tokens": tokens_BS, "labels": labels_BS, "loss_mask": loss_mask_BS}
    if segment_ids_BS is None:
        batch["position_ids"] = torch.arange(S).unsqueeze(0).expand(B, S).contiguous()
        batch["attention_mask"] = None
    else:
        batch["position_ids"] = _positions_from_segments(segment_ids_BS)
        batch["attention_mask"] = segment_causal_mask(segment_ids_BS)
    if device is not None:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    return batch


def _positions_from_segments(seg_BS: torch.Tensor) -> torch.Tensor:
    """Position ids that restart at 0 where the segment id changes."""
    B, S = seg_BS.shape
    idx_BS = torch.arange(S).expand(B, S)
    starts_BS = torch.ones(B, S, dtype=torch.bool)
    starts_BS[:, 1:] = seg_BS[:, 1:] != seg_BS[:, :-1]
    first_BS = torch.where(starts_BS, idx_BS, torch.zeros_like(idx_BS)).cummax(dim=1).values
    return (idx_BS - first_BS).contiguous()


def segment_causal_mask(seg_BS: torch.Tensor) -> torch.Tensor:
    """Megatron attention mask (True = masked), shape (B, 1, S, S): causal within each segment only."""
    S = seg_BS.shape[1]
    same = seg_BS.unsqueeze(2) == seg_BS.unsqueeze(1)  # (B, S, S)
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    return ~(same & causal).unsqueeze(1)

"""Greedy decoding with the trainer's own Megatron forward: what a weight sync is checked against.

DESIGN.md: "Check a sync by greedy-token equality with the trainer's own forward". Every rank
of a TP x PP group calls :func:`megatron_greedy` with its model chunk; activations go stage to
stage point to point through the PP group, the last stage gathers the vocab-parallel logits
over TP, picks the argmax and broadcasts the token and its logprob (``log_softmax(logits)``,
fp32, padded vocabulary rows dropped) back through the PP group, so every rank returns the same
completions. No KV cache: the whole sequence is recomputed each step, fine for the few tokens a
check needs. One prompt at a time (batch 1), so padding plays no part.
"""
from __future__ import annotations

import datetime
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from mindr1.models.arch import ModelArch
from mindr1.rollout.base import Completion, completion_from_tokens

DEFAULT_TIMEOUT_S = 300.0


def _wait(work, what: str, timeout_s: float) -> None:
    if not work.wait(timeout=datetime.timedelta(seconds=timeout_s)):
        raise RuntimeError(f"megatron greedy: {what} did not finish within {timeout_s} s")


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def megatron_logits(model, arch: ModelArch, token_ids: Sequence[int], timeout_s: float = DEFAULT_TIMEOUT_S
                    ) -> Optional[torch.Tensor]:
    """fp32 logits ``(S, vocab_size)`` of one sequence on the last PP stage; None on other stages.

    Every rank of the TP x PP group must call it with the same ``token_ids``.
    """
    from megatron.core import parallel_state as ps

    from mindr1.models.vocab_parallel import gather_vocab_parallel

    model = _unwrap(model)
    pp_group, pp_rank = ps.get_pipeline_model_parallel_group(), ps.get_pipeline_model_parallel_rank()
    pp_size = ps.get_pipeline_model_parallel_world_size()
    device = next(model.parameters()).device
    ids_1S = torch.tensor([list(token_ids)], dtype=torch.long, device=device)
    pos_1S = torch.arange(ids_1S.shape[1], device=device)[None]
    dtype = next(model.parameters()).dtype
    if pp_rank > 0:
        hidden_S1H = torch.empty(ids_1S.shape[1], 1, arch.hidden_size, dtype=dtype, device=device)
        src = dist.get_global_rank(pp_group, pp_rank - 1)
        _wait(dist.irecv(hidden_S1H, src=src, group=pp_group), "receive of activations", timeout_s)
        model.set_input_tensor(hidden_S1H)
    with torch.no_grad():
        out = model(input_ids=ids_1S, position_ids=pos_1S, attention_mask=None)
    if pp_rank < pp_size - 1:
        dst = dist.get_global_rank(pp_group, pp_rank + 1)
        _wait(dist.isend(out.contiguous(), dst=dst, group=pp_group), "send of activations", timeout_s)
        return None
    return gather_vocab_parallel(out, arch.vocab_size)[0].float()  # (S, V)


def megatron_greedy(model, arch: ModelArch, prompts: Sequence[Sequence[int]], max_tokens: int,
                    stop_token_ids: Sequence[int] = (), timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Completion]:
    """Greedy completions of ``prompts`` (the same list on every rank), with per-token logprobs."""
    from megatron.core import parallel_state as ps

    pp_group = ps.get_pipeline_model_parallel_group()
    last = dist.get_global_rank(pp_group, ps.get_pipeline_model_parallel_world_size() - 1)
    model.eval()
    results = []
    for prompt in prompts:
        tokens, logprobs = list(prompt), []
        for _ in range(max_tokens):
            logits_SV = megatron_logits(model, arch, tokens, timeout_s)
            choice = torch.zeros(2, dtype=torch.float64)
            if logits_SV is not None:
                logp_V = torch.log_softmax(logits_SV[-1], dim=-1)
                token = int(torch.argmax(logp_V))
                choice = torch.tensor([token, float(logp_V[token])], dtype=torch.float64)
            choice = choice.to(next(_unwrap(model).parameters()).device)
            _wait(dist.broadcast(choice, src=last, group=pp_group, async_op=True), "broadcast of a token", timeout_s)
            tokens.append(int(choice[0]))
            logprobs.append(float(choice[1]))
            if tokens[-1] in set(stop_token_ids):
                break
        results.append(completion_from_tokens(tokens[len(prompt):], logprobs, set(stop_token_ids), max_tokens))
    return results

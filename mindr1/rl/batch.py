"""One typed container for a GRPO rollout batch, passed whole between the controller and workers.

Layout. Row ``b`` is one completion: ``tokens_BS[b]`` holds its prompt then its response,
starting at column 0, right-padded with ``pad_id`` to the batch's width S. The response of row b
occupies columns ``prompt_len_B[b] .. prompt_len_B[b] + response_len_B[b] - 1``. Per-token RL
quantities live on a response grid ``(B, R)`` with R = the longest response: column j of row b
is response token j, valid where ``response_mask_BR`` is 1. Rows are laid out group by group
(``n_samples_per_prompt`` consecutive rows per prompt), as ``mindr1.rl.algos`` expects.

Megatron predicts token t+1 at position t, so the log-prob of response token j of row b sits at
sequence position ``prompt_len_B[b] + j - 1``: :func:`response_positions_BR` gives those indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional, Sequence

import torch


def pad_right_BS(seqs: Sequence[Sequence[int]], pad_id: int, width: Optional[int] = None) -> torch.Tensor:
    """int64 (B, S) of ``seqs`` right-padded with ``pad_id`` to ``width`` (default: the longest)."""
    width = max((len(s) for s in seqs), default=0) if width is None else width
    out_BS = torch.full((len(seqs), max(width, 1)), pad_id, dtype=torch.long)
    for b, seq in enumerate(seqs):
        if len(seq) > width:
            raise ValueError(f"row {b} has {len(seq)} tokens, more than the width {width}")
        out_BS[b, :len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return out_BS


def pad_right_float_BR(rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    """float32 (B, R) of ``rows`` right-padded with 0."""
    out_BR = torch.zeros(len(rows), max(width, 1), dtype=torch.float32)
    for b, row in enumerate(rows):
        out_BR[b, :len(row)] = torch.as_tensor(list(row), dtype=torch.float32)
    return out_BR


def response_positions_BR(prompt_len_B: torch.Tensor, width_R: int) -> torch.Tensor:
    """Sequence positions whose logits predict response token j of each row: prompt_len + j - 1."""
    return prompt_len_B.unsqueeze(1) - 1 + torch.arange(width_R).unsqueeze(0)


@dataclass
class RolloutBatch:
    """Prompts, responses, masks and every per-sample / per-token quantity of one GRPO step."""

    tokens_BS: torch.Tensor
    """int64 (B, S): prompt + response, right-padded."""
    prompt_len_B: torch.Tensor
    """int64 (B,): prompt tokens of each row."""
    response_len_B: torch.Tensor
    """int64 (B,): response tokens of each row (including its stop token)."""
    response_mask_BR: torch.Tensor
    """float32 (B, R): 1 on response tokens."""
    finished_B: torch.Tensor
    """bool (B,): the completion ended with a stop token (False: cut at max_response_length)."""
    group_size: int
    """Completions per prompt (consecutive rows)."""
    rollout_logp_BR: Optional[torch.Tensor] = None
    """float32 (B, R): the engine's raw log-probs of the response tokens."""
    rewards_B: Optional[torch.Tensor] = None
    """float32 (B,): combined reward."""
    advantages_B: Optional[torch.Tensor] = None
    """float32 (B,): group-relative advantage (broadcast over tokens)."""
    old_logp_BR: Optional[torch.Tensor] = None
    """float32 (B, R): log-probs of the policy that sampled (None: on-policy, taken from the current forward)."""
    ref_logp_BR: Optional[torch.Tensor] = None
    """float32 (B, R): reference log-probs (None without a KL term)."""
    is_weights_BR: Optional[torch.Tensor] = None
    """float32 (B, R): rollout-correction weights of the policy loss (None: no correction)."""
    loss_mask_B: Optional[torch.Tensor] = None
    """float32 (B,): 1 for rows in the loss, 0 for rows left out (overlong filtering); None: all rows."""
    meta: dict = field(default_factory=dict)
    """Plain per-batch values (step, seeds); not sliced."""

    @classmethod
    def from_completions(cls, prompts: Sequence[Sequence[int]], groups: Sequence[Sequence], pad_id: int) -> "RolloutBatch":
        """Rows from prompt token ids and the engine's groups of ``Completion`` (one group per prompt)."""
        if len(prompts) != len(groups):
            raise ValueError(f"{len(prompts)} prompts but {len(groups)} groups of completions")
        sizes = {len(g) for g in groups}
        if len(sizes) != 1:
            raise ValueError(f"groups differ in size: {sorted(sizes)}")
        rows, prompt_lens, responses, logps, finished = [], [], [], [], []
        for prompt, group in zip(prompts, groups):
            for c in group:
                rows.append(list(prompt) + list(c.token_ids))
                prompt_lens.append(len(prompt))
                responses.append(len(c.token_ids))
                logps.append(c.logprobs)
                finished.append(c.finish_reason == "stop")
        width_R = max(max(responses), 1)
        response_len_B = torch.tensor(responses, dtype=torch.long)
        return cls(tokens_BS=pad_right_BS(rows, pad_id), prompt_len_B=torch.tensor(prompt_lens, dtype=torch.long),
                   response_len_B=response_len_B,
                   response_mask_BR=(torch.arange(width_R).unsqueeze(0) < response_len_B.unsqueeze(1)).float(),
                   finished_B=torch.tensor(finished, dtype=torch.bool), group_size=sizes.pop(),
                   rollout_logp_BR=pad_right_float_BR(logps, width_R))

    def __len__(self) -> int:
        return self.tokens_BS.shape[0]

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask_BR.sum())

    @property
    def num_loss_tokens(self) -> int:
        """Response tokens of the rows in the loss (all rows unless ``loss_mask_B``)."""
        if self.loss_mask_B is None:
            return self.num_response_tokens
        return int((self.response_mask_BR * self.loss_mask_B.unsqueeze(1)).sum())

    @property
    def num_loss_sequences(self) -> int:
        return len(self) if self.loss_mask_B is None else int(self.loss_mask_B.sum())

    @classmethod
    def concat(cls, batches: Sequence["RolloutBatch"], pad_id: int) -> "RolloutBatch":
        """Rows of ``batches`` one after another, widths padded to the widest (same group size; meta of the first)."""
        if len({b.group_size for b in batches}) != 1:
            raise ValueError(f"cannot concatenate batches of group sizes {[b.group_size for b in batches]}")
        first, changes = batches[0], {}
        for f in fields(cls):
            values = [getattr(b, f.name) for b in batches]
            if not torch.is_tensor(values[0]):
                continue
            if any(v is None for v in values):
                raise ValueError(f"cannot concatenate batches where only some have {f.name}")
            if f.name.endswith("_BS") or f.name.endswith("_BR"):
                width = max(v.shape[1] for v in values)
                fill = pad_id if f.name.endswith("_BS") else 0
                values = [torch.nn.functional.pad(v, (0, width - v.shape[1]), value=fill) for v in values]
            changes[f.name] = torch.cat(values, dim=0)
        return replace(first, **changes)

    def select(self, idx: torch.Tensor | slice) -> "RolloutBatch":
        """Rows ``idx`` (per-row tensors sliced; group_size kept as metadata, meaningless after a shuffle)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if torch.is_tensor(value):
                changes[f.name] = value[idx]
        return replace(self, **changes)

    def trimmed(self) -> "RolloutBatch":
        """The same rows with columns past the longest row (S) and the longest response (R) removed."""
        S = int((self.prompt_len_B + self.response_len_B).max())
        R = max(int(self.response_len_B.max()), 1)
        changes = {"tokens_BS": self.tokens_BS[:, :S]}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_BR") and value is not None:
                changes[f.name] = value[:, :R]
        return replace(self, **changes)

    def chunks(self, n: int) -> list["RolloutBatch"]:
        """``n`` consecutive equal slices (B must divide by n)."""
        if len(self) % n:
            raise ValueError(f"a batch of {len(self)} rows does not split into {n} equal parts")
        size = len(self) // n
        return [self.select(slice(i * size, (i + 1) * size)) for i in range(n)]

    def micro_batches(self, micro_batch_size: int) -> list[dict]:
        """Megatron micro-batch dicts (same width for every micro-batch: pipeline p2p needs one shape)."""
        from mindr1.training.schedule import causal_batch

        out = []
        for start in range(0, len(self), micro_batch_size):
            part = self.select(slice(start, start + micro_batch_size))
            mb = causal_batch(part.tokens_BS)
            mb["positions_BR"] = response_positions_BR(part.prompt_len_B, part.response_mask_BR.shape[1])
            mb["response_mask_BR"] = part.response_mask_BR
            for name in ("old_logp_BR", "ref_logp_BR", "advantages_B", "rollout_logp_BR", "is_weights_BR",
                         "loss_mask_B"):
                value = getattr(part, name)
                if value is not None:
                    mb[name] = value
            out.append(mb)
        return out


def gather_response_BR(values_BS: torch.Tensor, positions_BR: torch.Tensor) -> torch.Tensor:
    """Per-position values (B, S) picked at the response positions (B, R); out-of-range columns give 0."""
    S = values_BS.shape[1]
    safe_BR = positions_BR.clamp(0, S - 1)
    return values_BS.gather(1, safe_BR) * (positions_BR < S).to(values_BS.dtype)

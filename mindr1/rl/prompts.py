"""RL prompts for the controller: the preprocessed prompt dataset, its tokenizer, and a resumable order.

``load_prompts(data_path, ...)`` reads ``tools/preprocess_data.py`` output
(``R1AlpacaStyleInstructionHandler`` with ``--dataset-additional-keys labels``: prompt token ids
with the template applied, the ground truth as text), or a blend ``"3,A,1,B"``.
:class:`PromptSource` walks a seeded permutation per epoch; its state (epoch, position) goes into
the checkpoint so a resumed run draws exactly the prompts it would have drawn.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class Prompts:
    """Indexable prompts (``{"prompt_ids", "ground_truth", ...}``) with their tokenizer."""

    def __init__(self, dataset, tokenizer, max_prompt_length: int):
        self.dataset, self.tokenizer, self.max_prompt_length = dataset, tokenizer, max_prompt_length
        self.pad_id = tokenizer.pad_id
        self.truncated = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        ids = item["prompt_ids"]
        if len(ids) > self.max_prompt_length:
            # keep the end: the open assistant turn (and a prefilled <think>) must stay
            ids = ids[-self.max_prompt_length:]
            self.truncated += 1
        item["prompt_ids"] = [int(t) for t in ids]
        return item

    def prompt_text(self, item: dict) -> str:
        return self.tokenizer.decode(item["prompt_ids"])

    def decode_responses(self, batch) -> list[str]:
        """Response texts, without the stop token that ended them."""
        out = []
        for b in range(len(batch)):
            start, n = int(batch.prompt_len_B[b]), int(batch.response_len_B[b])
            if bool(batch.finished_B[b]) and n > 0:
                n -= 1
            out.append(self.tokenizer.decode(batch.tokens_BS[b, start:start + n].tolist()))
        return out


def load_prompts(data_path: str, dataset_category: Optional[str], tokenizer_path: Optional[str],
                 max_prompt_length: int, blend_samples: int = 1_000_000, seed: int = 1234) -> Prompts:
    """The prompt dataset (or blend) of ``data_path`` with the tokenizer preprocessing recorded."""
    from mindr1.config import ConfigError
    from mindr1.data.datasets import PromptDataset, read_summary
    from mindr1.data.tokenizer import TextTokenizer

    if not data_path:
        raise ConfigError("actor_rollout_ref.actor_rollout.data_path: no prompt dataset given")
    parts = data_path.split(",")
    first = parts[0] if len(parts) == 1 else parts[1]
    tok_path = tokenizer_path or read_summary(first).get("tokenizer", {}).get("path")
    if tok_path is None:
        raise ConfigError(f"{first}_summary.json records no tokenizer; set training.tokenizer_name_or_path")
    tokenizer = TextTokenizer(tok_path)

    def factory(prefix: str):
        try:
            return PromptDataset(prefix, tokenizer_dir=tok_path, keys=["labels"])
        except FileNotFoundError as exc:
            raise ConfigError(f"data_path {prefix!r}: not a prompt dataset with labels ({exc})") from None

    if len(parts) == 1:
        dataset = factory(data_path)
    else:
        from mindr1.data.blend import build_blend

        dataset = build_blend(data_path, dataset_category, blend_samples, seed, factory)
    return Prompts(dataset, tokenizer, max_prompt_length)


class PromptSource:
    """Indices of ``batch_size`` prompts per step: a fresh seeded permutation every epoch."""

    def __init__(self, size: int, batch_size: int, seed: int):
        if size < 1:
            raise ValueError("the prompt dataset is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.epoch, self.position = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def next_indices(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.batch_size:
            order = self._order()
            take = order[self.position:self.position + self.batch_size - len(out)]
            out.extend(int(i) for i in take)
            self.position += len(take)
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

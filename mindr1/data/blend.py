"""Blends of datasets: ``data_path: "3,PATH_A,1,PATH_B"`` with ``dataset_category: "1,0"``.

Each part gets ``round(weight / sum * num_samples)`` draws (largest remainders, so the counts add
up exactly and the realised mix matches the weights to within one sample); the order of parts is a
seeded permutation, and inside a part samples are taken through seeded per-epoch permutations, so
the blend is the same for the same seed and a part smaller than its share is cycled. Items are the
part's items (dicts) with ``"category"`` added when categories are given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def parse_data_path(data_path: str) -> list[tuple[float, str]]:
    """``"3,A,1,B"`` -> ``[(3.0, "A"), (1.0, "B")]``; a single ``"A"`` -> ``[(1.0, "A")]``."""
    fields = [f for f in data_path.replace(",", " ").split() if f]
    if len(fields) == 1:
        return [(1.0, fields[0])]
    if not fields or len(fields) % 2:
        raise ValueError(f"data_path {data_path!r}: expected 'WEIGHT,PATH,WEIGHT,PATH,...' or one PATH")
    parts = []
    for i in range(0, len(fields), 2):
        try:
            weight = float(fields[i])
        except ValueError:
            raise ValueError(f"data_path {data_path!r}: weight {fields[i]!r} (field {i + 1}) is not a number") from None
        if weight < 0:
            raise ValueError(f"data_path {data_path!r}: weight {fields[i]!r} is negative")
        parts.append((weight, fields[i + 1]))
    if sum(w for w, _ in parts) <= 0:
        raise ValueError(f"data_path {data_path!r}: the weights sum to zero")
    return parts


def parse_categories(dataset_category: str | None, n_parts: int) -> list[int] | None:
    if dataset_category is None or str(dataset_category).strip() == "":
        return None
    fields = [f for f in str(dataset_category).replace(",", " ").split() if f]
    if len(fields) != n_parts:
        raise ValueError(f"dataset_category {dataset_category!r} has {len(fields)} entries for {n_parts} data_path parts")
    try:
        return [int(f) for f in fields]
    except ValueError:
        raise ValueError(f"dataset_category {dataset_category!r}: entries must be integers") from None


def _exact_counts(weights: np.ndarray, n: int) -> np.ndarray:
    share = weights / weights.sum() * n
    counts = np.floor(share).astype(np.int64)
    for k in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    return counts


@dataclass
class _Part:
    path: str
    weight: float
    category: int | None
    dataset: object


class BlendedDataset:
    """``num_samples`` items drawn from the parts by weight; see the module docstring."""

    def __init__(self, parts: list[_Part], num_samples: int, seed: int):
        self.parts, self.num_samples, self.seed = parts, num_samples, seed
        weights = np.array([p.weight for p in parts], dtype=np.float64)
        self.counts = _exact_counts(weights, num_samples)
        rng = np.random.default_rng(seed)
        self.part_of = rng.permutation(np.repeat(np.arange(len(parts)), self.counts))
        self.index_of = np.zeros(num_samples, dtype=np.int64)
        for k, part in enumerate(parts):
            size = len(part.dataset)
            if size == 0 and self.counts[k]:
                raise ValueError(f"data_path part {part.path!r} is empty but has weight {part.weight}")
            where = np.flatnonzero(self.part_of == k)
            epochs = -(-where.size // size) if size else 0
            part_rng = np.random.default_rng([seed, k])
            order = np.concatenate([part_rng.permutation(size) for _ in range(epochs)] or [np.zeros(0, np.int64)])
            self.index_of[where] = order[: where.size]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int):
        part = self.parts[int(self.part_of[i])]
        item = part.dataset[int(self.index_of[i])]
        if part.category is not None:
            if not isinstance(item, dict):
                raise TypeError(f"{part.path}: dataset_category needs items that are dicts, got {type(item).__name__}")
            item = {**item, "category": part.category}
        return item

    def realised_mix(self) -> list[dict]:
        """Per part: path, weight, target and realised fraction, count, category."""
        total_w = sum(p.weight for p in self.parts)
        return [{"path": p.path, "weight": p.weight, "category": p.category, "count": int(c),
                 "target_fraction": p.weight / total_w, "fraction": int(c) / max(self.num_samples, 1)}
                for p, c in zip(self.parts, self.counts)]

    def describe_mix(self) -> str:
        return "; ".join(f"{m['path']}: {m['count']} ({m['fraction']:.1%}, target {m['target_fraction']:.1%})"
                         for m in self.realised_mix())


def build_blend(data_path: str, dataset_category: str | None, num_samples: int, seed: int,
                dataset_factory) -> BlendedDataset:
    """A blend of ``dataset_factory(prefix)`` datasets per ``data_path`` weights (see module docstring)."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    parsed = parse_data_path(data_path)
    categories = parse_categories(dataset_category, len(parsed)) or [None] * len(parsed)
    parts = [_Part(path, w, c, dataset_factory(path)) for (w, path), c in zip(parsed, categories)]
    return BlendedDataset(parts, num_samples, seed)

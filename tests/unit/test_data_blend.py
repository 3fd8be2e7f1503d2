"""Blends: the weighted mix is realised, deterministic per seed, and categories ride along."""
import numpy as np
import pytest

from mindr1.data.blend import build_blend, parse_data_path


class Fake:
    def __init__(self, name, size):
        self.name, self.size = name, size

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        assert 0 <= i < self.size
        return {"src": self.name, "i": i}


SIZES = {"A": 700, "B": 300}


def _blend(seed, n=10_000, categories="1,0"):
    return build_blend("3,A,1,B", categories, n, seed, lambda p: Fake(p, SIZES[p]))


def test_three_to_one_within_two_percent():
    blend = _blend(7)
    items = [blend[i] for i in range(len(blend))]
    share_a = sum(it["src"] == "A" for it in items) / len(items)
    assert abs(share_a - 0.75) < 0.02
    assert all(it["category"] == (1 if it["src"] == "A" else 0) for it in items)
    mix = {m["path"]: m for m in blend.realised_mix()}
    assert mix["A"]["count"] + mix["B"]["count"] == 10_000
    assert abs(mix["A"]["fraction"] - 0.75) < 0.02 and mix["B"]["category"] == 0
    # every sample of a part is used before any repeats (per-epoch permutations)
    a_first = [it["i"] for it in items if it["src"] == "A"][: SIZES["A"]]
    assert sorted(a_first) == list(range(SIZES["A"]))


def test_same_seed_same_blend_other_seed_differs():
    one, two, other = _blend(3, 2000), _blend(3, 2000), _blend(4, 2000)
    seq = lambda b: [(b[i]["src"], b[i]["i"]) for i in range(len(b))]
    assert seq(one) == seq(two)
    assert seq(one) != seq(other)


def test_single_prefix_and_no_categories():
    blend = build_blend("A", None, 50, 0, lambda p: Fake(p, 10))
    assert len(blend) == 50 and "category" not in blend[0]
    assert blend.realised_mix()[0]["count"] == 50


@pytest.mark.parametrize("bad, message", [("3,A,1", "expected 'WEIGHT,PATH"), ("x,A,1,B", "weight 'x'")])
def test_bad_data_path(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_data_path(bad)


def test_categories_count_must_match():
    with pytest.raises(ValueError, match="has 1 entries for 2"):
        _blend(0, 10, categories="1")

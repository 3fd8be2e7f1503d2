"""Topology checks: one clear message naming the numbers that do not divide."""
import pytest

from mindr1.models.arch import load_arch
from mindr1.parallel.topology import Topology, TopologyError


def test_tp3_with_4_heads_names_the_numbers():
    with pytest.raises(TopologyError, match=r"TP=3 does not divide the 4 attention heads"):
        Topology(3, tp=3).check_model(num_attention_heads=4, num_query_groups=4, num_layers=2)


def test_pp3_with_2_layers_names_the_numbers():
    with pytest.raises(TopologyError, match=r"PP=3 does not divide the 2 layers"):
        Topology(3, pp=3).check_model(num_attention_heads=4, num_query_groups=2, num_layers=2)


def test_world4_with_tp_pp_8_names_the_numbers():
    with pytest.raises(TopologyError, match=r"world size 4 is not divisible by TP\*PP = 4\*2 = 8"):
        Topology(4, tp=4, pp=2)


def test_kv_groups_checked_separately_from_heads():
    # SmolLM2: 9 query heads, 3 KV heads: TP=3 fits, TP=9 does not (KV heads).
    arch = load_arch("smollm2-135m")
    Topology(3, tp=3).check_arch(arch)
    with pytest.raises(TopologyError, match=r"TP=9 does not divide the 3 key/value heads"):
        Topology(9, tp=9).check_arch(arch)


def test_num_layer_list_must_sum():
    with pytest.raises(TopologyError, match=r"sums to 13, not the 12 layers"):
        Topology(2, pp=2).check_model(4, 2, 12, num_layer_list=[7, 6])


def test_dp_and_coords():
    topo = Topology(8, tp=2, pp=2)
    assert topo.dp == 2
    assert topo.coords(0) == {"tp": 0, "pp": 0, "dp": 0}
    assert topo.coords(3) == {"tp": 1, "pp": 0, "dp": 1}
    assert topo.coords(4) == {"tp": 0, "pp": 1, "dp": 0}

"""The parallel layout of one job, as one explicit object: TP x PP x DP (and virtual PP).

Every check that a layout fits a model lives here, and its error names the numbers that do not
divide, before any process group is created.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


class TopologyError(ValueError):
    """A parallel layout that does not fit the world size or the model; names the numbers."""


@dataclass(frozen=True)
class Topology:
    world_size: int
    tp: int = 1
    pp: int = 1
    vpp: Optional[int] = None
    """Virtual pipeline stages per rank (interleaved 1F1B); None for plain 1F1B."""

    def __post_init__(self):
        for name in ("world_size", "tp", "pp"):
            if getattr(self, name) < 1:
                raise TopologyError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.world_size % (self.tp * self.pp):
            raise TopologyError(
                f"world size {self.world_size} is not divisible by TP*PP = {self.tp}*{self.pp} = {self.tp * self.pp}")
        if self.vpp is not None and (self.vpp < 2 or self.pp < 2):
            raise TopologyError(f"virtual pipeline size {self.vpp} needs PP >= 2 and vpp >= 2 (PP={self.pp})")

    @property
    def dp(self) -> int:
        return self.world_size // (self.tp * self.pp)

    @classmethod
    def from_world(cls, world_size: int, tp: int = 1, pp: int = 1, vpp: Optional[int] = None) -> "Topology":
        return cls(world_size=world_size, tp=tp, pp=pp, vpp=vpp)

    def check_model(self, num_attention_heads: int, num_query_groups: int, num_layers: int,
                    ffn_hidden_size: Optional[int] = None, num_layer_list: Optional[Sequence[int]] = None,
                    padded_vocab_size: Optional[int] = None) -> None:
        """Raise :class:`TopologyError` naming the numbers when the model does not split this way."""
        problems = []
        if num_attention_heads % self.tp:
            problems.append(f"TP={self.tp} does not divide the {num_attention_heads} attention heads")
        if num_query_groups % self.tp:
            problems.append(f"TP={self.tp} does not divide the {num_query_groups} key/value heads (query groups)")
        if ffn_hidden_size is not None and ffn_hidden_size % self.tp:
            problems.append(f"TP={self.tp} does not divide the FFN size {ffn_hidden_size}")
        if padded_vocab_size is not None and padded_vocab_size % self.tp:
            problems.append(f"TP={self.tp} does not divide the padded vocabulary {padded_vocab_size}")
        stages = self.pp * (self.vpp or 1)
        if num_layer_list is not None:
            if len(num_layer_list) != self.pp:
                problems.append(f"num_layer_list {list(num_layer_list)} has {len(num_layer_list)} entries "
                                f"but PP={self.pp}")
            elif sum(num_layer_list) != num_layers:
                problems.append(f"num_layer_list {list(num_layer_list)} sums to {sum(num_layer_list)}, "
                                f"not the {num_layers} layers")
        elif num_layers % stages:
            what = f"PP={self.pp}" if self.vpp is None else f"PP*VPP={self.pp}*{self.vpp}"
            problems.append(f"{what} does not divide the {num_layers} layers")
        if problems:
            raise TopologyError("; ".join(problems))

    def check_arch(self, arch, num_layer_list: Optional[Sequence[int]] = None) -> None:
        """:meth:`check_model` for a :class:`mindr1.models.arch.ModelArch`."""
        self.check_model(arch.num_attention_heads, arch.num_query_groups, arch.num_layers,
                         arch.ffn_hidden_size, num_layer_list, arch.padded_vocab(self.tp))

    def coords(self, rank: int) -> dict:
        """(tp, pp, dp) of a global rank in megatron's default order tp-cp-ep-dp-pp."""
        tp_rank = rank % self.tp
        dp_rank = (rank // self.tp) % self.dp
        pp_rank = rank // (self.tp * self.dp)
        return {"tp": tp_rank, "pp": pp_rank, "dp": dp_rank}

    def __str__(self) -> str:
        vpp = f" VPP={self.vpp}" if self.vpp else ""
        return f"TP={self.tp} PP={self.pp} DP={self.dp}{vpp} (world {self.world_size})"

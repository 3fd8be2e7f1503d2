"""The accelerator: the one place that knows cuda / npu / cpu."""
import re
from pathlib import Path

import torch

from mindr1.accelerator import Accelerator, get_accelerator

PACKAGE = Path(__file__).resolve().parents[2] / "mindr1"
# The CPU adaptor names torch.cuda only to stand in for it inside megatron-core.
ALLOWED = {"accelerator.py", "cpu_adaptor.py"}


def test_cpu_here_and_overridable(monkeypatch):
    acc = get_accelerator()
    assert acc.kind == "cpu" and acc.dist_backend == "gloo" and acc.device() == torch.device("cpu")
    monkeypatch.setenv("MINDR1_ACCELERATOR", "cpu")
    assert get_accelerator().is_cpu
    assert Accelerator("cuda").dist_backend == "nccl" and Accelerator("npu").dist_backend == "hccl"
    assert Accelerator("npu").ray_resource() == "NPU"


def test_seed_and_rng_state_round_trip():
    acc = get_accelerator()
    acc.manual_seed(3)
    state = acc.rng_state()
    a = torch.rand(4)
    acc.set_rng_state(state)
    assert torch.equal(a, torch.rand(4))
    assert acc.memory_stats()["rss_gib"] > 0


def test_no_other_module_names_cuda():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ALLOWED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"torch\.cuda|[\"']cuda[\"']|\.cuda\(", code):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert not offenders, "only mindr1/accelerator.py may name cuda:\n" + "\n".join(offenders)

"""A packed sequence gives each of its samples exactly the logits that sample gets alone."""
import torch

from mindr1.parallel.launch import spawn


def _logits(rank, world, batches):
    from mindr1.models.arch import load_arch
    from mindr1.models.megatron import build_model
    from mindr1.models.vocab_parallel import gather_vocab_parallel
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology

    arch = load_arch("tiny-qwen2")
    topo = Topology(world)
    with ParallelContext(topo, seed=4):
        model = build_model(arch, topo)
        model.eval()
        with torch.no_grad():
            return [gather_vocab_parallel(model(b["tokens"], b["position_ids"], b["attention_mask"]),
                                          arch.vocab_size) for b in batches]


def test_packed_equals_separate():
    from mindr1.training.schedule import causal_batch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 300, (1, 5), generator=g), torch.randint(0, 300, (1, 7), generator=g)
    packed = causal_batch(torch.cat([a, b], dim=1), segment_ids_BS=torch.tensor([[1] * 5 + [2] * 7]))
    la, lb, lp = spawn(_logits, 1, [causal_batch(a), causal_batch(b), packed], timeout_s=300)[0]
    assert (lp[:, :5] - la).abs().max() < 1e-5
    assert (lp[:, 5:] - lb).abs().max() < 1e-5


def _logprobs_keep_logits(rank, world):
    from mindr1.models.vocab_parallel import vocab_parallel_logprobs
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology

    with ParallelContext(Topology(world)):
        logits = torch.randn(2, 3, 16, requires_grad=True)
        before = logits.detach().clone()
        logp = vocab_parallel_logprobs(logits, torch.tensor([[1, 2, 3], [4, 5, 6]]), vocab_size=12)
        ref = torch.log_softmax(before[..., :12], dim=-1).gather(-1, torch.tensor([[1, 2, 3], [4, 5, 6]])[..., None])
        return torch.equal(logits.detach(), before), (logp.detach() - ref[..., 0]).abs().max().item()


def test_logprobs_exclude_padding_and_leave_logits_untouched():
    unchanged, diff = spawn(_logprobs_keep_logits, 1, timeout_s=300)[0]
    assert unchanged and diff < 1e-6

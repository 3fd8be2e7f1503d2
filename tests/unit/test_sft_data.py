"""SFT micro-batches: shift, padding to the longest sample, packed samples kept apart."""
import numpy as np
import torch

from mindr1.training.data import collate


def _sample(ids, n_prompt, seg=None):
    ids = np.array(ids, dtype=np.int64)
    labels = ids.copy()
    labels[:n_prompt] = -100
    out = {"input_ids": ids, "labels": labels}
    if seg is not None:
        out["segment_ids"] = np.array(seg, dtype=np.int32)
    return out


def test_unpacked_pads_to_longest_and_shifts():
    mb = collate([_sample([5, 6, 7, 8], 2), _sample([9, 10, 11, 12, 13, 14], 3)], seq_length=64)
    assert mb["tokens"].shape == (2, 5)  # longest sample minus the shift, not seq_length
    assert mb["tokens"][0].tolist() == [5, 6, 7, 0, 0]
    assert mb["labels"][0, :3].tolist() == [0, 7, 8] and mb["loss_mask"][0].tolist() == [0, 1, 1, 0, 0]
    assert mb["loss_mask"][1].tolist() == [0, 0, 1, 1, 1]
    assert mb["attention_mask"] is None  # plain causal: right padding cannot affect earlier positions


def test_packed_samples_never_attend_or_predict_across():
    packed = _sample([1, 2, 3, 4, 5, 6, 7, 0], 0, seg=[1, 1, 1, 2, 2, 2, 2, 0])
    packed["labels"] = np.array([-100, 2, 3, -100, -100, 6, 7, -100])
    mb = collate([packed], seq_length=64)
    # The label of the last token of sample 1 would be sample 2's first token: masked.
    assert mb["loss_mask"][0].tolist() == [1, 1, 0, 0, 1, 1, 0]
    assert mb["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 2, 3]
    mask = mb["attention_mask"][0, 0]  # True = masked
    assert not mask[4, 3] and mask[4, 2] and mask[2, 3] and not mask[2, 0]
    assert mask.shape == (7, 7) and torch.equal(mask[3:, :3], torch.ones(4, 3, dtype=torch.bool))


def test_loss_token_count_equals_collated_mask():
    """iteration_batch counts the global batch's loss tokens without collating other ranks' micro-batches."""
    from mindr1.training.data import loss_token_count

    rng = np.random.default_rng(0)
    samples = []
    for i in range(40):
        n = int(rng.integers(2, 40))
        s = _sample(rng.integers(1, 99, n), int(rng.integers(0, n)))
        if i % 3 == 0:  # packed: segments 1..k, then padding (0)
            cuts = np.sort(rng.choice(np.arange(1, n), size=min(3, n - 1), replace=False))
            seg = np.searchsorted(cuts, np.arange(n), side="right") + 1
            seg[-int(rng.integers(0, 3)) or n:] = 0
            s["segment_ids"] = seg.astype(np.int32)
            s["labels"][seg == 0] = -100
        samples.append(s)
    for seq_length in (8, 20, 64):
        for mbs in (1, 4):
            for k in range(0, len(samples), mbs):
                group = samples[k:k + mbs]
                want = int(collate(group, seq_length)["loss_mask"].sum())
                assert sum(loss_token_count(s, seq_length) for s in group) == want, (seq_length, k)


def test_iteration_batch_splits_by_dp_rank():
    from mindr1.training.data import iteration_batch

    samples = [_sample(list(range(1, 3 + i)), 1) for i in range(16)]
    whole, tokens, real = iteration_batch(samples, 1, 8, 2, 0, 1, 64)
    assert len(whole) == 4 and tokens == float(sum(int(mb["loss_mask"].sum()) for mb in whole))
    parts = [iteration_batch(samples, 1, 8, 2, r, 2, 64) for r in range(2)]
    assert [len(p[0]) for p in parts] == [2, 2] and all(p[1] == tokens and p[2] == real for p in parts)
    for mine, ref in zip(parts[0][0] + parts[1][0], whole):
        assert torch.equal(mine["tokens"], ref["tokens"]) and torch.equal(mine["loss_mask"], ref["loss_mask"])

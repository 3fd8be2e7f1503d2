"""Rollout contract pieces without processes: params, stop handling, bucket packing, HF engine updates."""
from __future__ import annotations

import pytest
import torch

from mindr1.rollout.base import SamplingParams, completion_from_tokens, make_engine, unpad_vocab
from mindr1.rollout.weight_sync import iter_packed_buckets, unpack_bucket


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="n must"):
        SamplingParams(n=0)
    assert SamplingParams(top_k=0).top_k == -1
    assert SamplingParams(temperature=0).greedy


def test_completion_cut_at_first_stop():
    c = completion_from_tokens([5, 7, 2, 9], [-1.0, -2.0, -3.0, -4.0], {2}, 10)
    assert (c.token_ids, c.logprobs, c.finish_reason) == ([5, 7, 2], [-1.0, -2.0, -3.0], "stop")
    c = completion_from_tokens([5, 7, 9], [-1.0, -2.0, -3.0], {2}, 3)
    assert c.finish_reason == "length"


def test_buckets_are_bounded_and_round_trip():
    tensors = [(f"t{i}", torch.randn(100 + i, dtype=torch.float32)) for i in range(10)]
    tensors.append(("big", torch.arange(3000, dtype=torch.int64)))
    buckets = list(iter_packed_buckets(iter(tensors), bucket_bytes=1200))
    assert all(flat.numel() <= 1200 for header, flat in buckets if header["entries"][0][0] != "big")
    back = [(n, t.clone()) for header, flat in buckets for n, t in unpack_bucket(header, flat)]
    assert [n for n, _ in back] == [n for n, _ in tensors]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(back, tensors))


def test_unpad_vocab_rows():
    t = torch.zeros(8, 2)
    assert unpad_vocab("model.embed_tokens.weight", t, 5).shape == (5, 2)
    assert unpad_vocab("model.norm.weight", torch.zeros(8), 5).shape == (8,)
    with pytest.raises(ValueError, match="fewer"):
        unpad_vocab("lm_head.weight", t, 9)


def test_hf_engine_update_weights_in_place_tied_and_padded():
    from mindr1.models.arch import ModelArch

    torch.manual_seed(0)
    arch = ModelArch.from_yaml("tiny-llama")  # tied embeddings, vocab 300
    src, dst = make_engine("hf", arch), make_engine("hf", arch)
    prompt = [[1, 2, 3, 4]]
    greedy = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    state = {k: v.clone() for k, v in src.state_dict().items() if k != "lm_head.weight"}
    state["model.embed_tokens.weight"] = torch.cat([state["model.embed_tokens.weight"], torch.ones(20, 64)])
    assert dst.update_weights(iter(state.items())) == len(state)
    a, b = src.generate(prompt, greedy)[0][0], dst.generate(prompt, greedy)[0][0]
    assert a.token_ids == b.token_ids and a.logprobs == pytest.approx(b.logprobs, abs=1e-6)
    assert dst.model.lm_head.weight.data_ptr() == dst.model.model.embed_tokens.weight.data_ptr()
    with pytest.raises(KeyError, match="no tensor"):
        dst.update_weights(iter([("model.nope.weight", torch.zeros(1))]))


def test_make_engine_unknown_name():
    with pytest.raises(ValueError, match="unknown rollout engine"):
        make_engine("tgi", "x")

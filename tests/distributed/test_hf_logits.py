"""The Megatron model built from HF weights gives HF transformers' logits (fp32, within 1e-4).

Real SmolLM2-135M-Instruct on a real prompt encoded by its real tokenizer at TP=1 and TP=3 (its
3 KV heads split only by 1 or 3); a random Qwen2 with qkv bias and untied embeddings at TP=1 and 2.
"""
from __future__ import annotations

import pytest
import torch

from mindr1.models.arch import load_arch
from mindr1.parallel.launch import spawn

from _helpers import random_hf_checkpoint

PROMPT = [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then she sold half "
                                      "as many clips in May. How many clips did Natalia sell altogether?"}]


def _megatron_logits(rank, world, tp, hf_dir, tokens):
    from mindr1.models.megatron import build_model, load_hf_weights
    from mindr1.models.vocab_parallel import gather_vocab_parallel
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology

    arch = load_arch(hf_dir)
    topo = Topology(world, tp=tp)
    with ParallelContext(topo, seed=1):
        model = build_model(arch, topo)
        load_hf_weights(model, arch, hf_dir, topo)
        model.eval()
        with torch.no_grad():
            positions = torch.arange(tokens.shape[1]).unsqueeze(0)
            logits = model(tokens, positions, None)
            full = gather_vocab_parallel(logits, arch.vocab_size)
    return full if rank == 0 else None


def _hf_logits(hf_dir, tokens):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 3])
def test_smollm2_logits_match_hf(smollm2_dir, tp):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    tokens = tok(text, return_tensors="pt")["input_ids"]
    assert tokens.shape[1] > 30
    expected = _hf_logits(str(smollm2_dir), tokens)
    got = spawn(_megatron_logits, tp, tp, str(smollm2_dir), tokens, timeout_s=600)[0]
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff < 1e-4, f"TP={tp}: max |logit diff| {diff:.2e}"
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize("tp", [1, 2])
def test_random_qwen2_logits_match_hf(tmp_path, tp):
    arch = load_arch("tiny-qwen2").replace(kv_channels=32, hidden_size=128, num_attention_heads=4)
    assert arch.add_qkv_bias and not arch.tie_word_embeddings
    hf_dir = str(random_hf_checkpoint(arch, tmp_path / "qwen2", seed=5))
    tokens = torch.randint(0, arch.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    expected = _hf_logits(hf_dir, tokens)
    got = spawn(_megatron_logits, tp, tp, hf_dir, tokens, timeout_s=600)[0]
    diff = (got - expected).abs().max().item()
    assert diff < 1e-4, f"TP={tp}: max |logit diff| {diff:.2e}"

"""A Megatron model loaded rank by rank from a converted sharded checkpoint gives HF transformers' logits.

Real SmolLM2-135M-Instruct converted by tools/convert_ckpt.py to TP=3 x PP=2 (6 gloo processes);
each rank reads only its own mp_rank file; logits come out of megatron's pipeline schedule.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mindr1.parallel.launch import spawn

ROOT = Path(__file__).resolve().parents[2]


def _capture_logits(logits_BSV, batch, vocab_size):
    from mindr1.models.vocab_parallel import gather_vocab_parallel

    full = gather_vocab_parallel(logits_BSV, vocab_size).detach()
    return logits_BSV.sum() * 0.0, torch.tensor(0, dtype=torch.int), {"logits": full}


def _pipeline_logits(rank, world, ckpt, tp, pp, tokens):
    from functools import partial

    from mindr1.checkpoint import layout
    from mindr1.checkpoint.mcore_io import arch_from_args
    from mindr1.models.megatron import build_model, load_state_dict
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology
    from mindr1.training.schedule import causal_batch, run_pipeline

    topo = Topology(world, tp=tp, pp=pp)
    with ParallelContext(topo) as ctx:
        weights = layout.load_model_shard(ckpt, ctx.tp_rank, tp, ctx.pp_rank, pp)
        shard = layout.shard_path(ckpt, layout.read_latest(ckpt), ctx.tp_rank, ctx.pp_rank, pp)
        arch = arch_from_args(layout.checkpoint_args(layout.load_shard(shard, mmap=True)))
        model = build_model(arch, topo)
        load_state_dict(model, weights)
        model.eval()
        with torch.no_grad():
            out = run_pipeline([model], [causal_batch(tokens)], partial(_capture_logits, vocab_size=arch.vocab_size),
                               forward_only=True)
        return out[0]["logits"] if out and ctx.tp_rank == 0 else None


@pytest.mark.slow
def test_smollm2_tp3_pp2_checkpoint_matches_hf(tmp_path, smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mg = tmp_path / "mg"
    subprocess.run([sys.executable, "tools/convert_ckpt.py", "--load-model-type", "hf", "--save-model-type", "mg",
                    "--target-tensor-parallel-size", "3", "--target-pipeline-parallel-size", "2",
                    "--load-dir", str(smollm2_dir), "--save-dir", str(mg)], cwd=ROOT, check=True, capture_output=True)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "What is 17 * 23? Think step by step."}],
                                   tokenize=False, add_generation_prompt=True)
    tokens = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)(tokens).logits
    results = spawn(_pipeline_logits, 6, str(mg), 3, 2, tokens, timeout_s=900)
    got = [r for r in results if r is not None]
    assert len(got) == 1  # the last stage's TP rank 0
    diff = (got[0] - expected).abs().max().item()
    assert diff < 1e-4, f"max |logit diff| {diff:.2e}"

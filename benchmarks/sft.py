"""SFT throughput: mindr1 (megatron-core, TP=1) against a plain PyTorch/HF training loop, same run.

Same model (real SmolLM2-135M-Instruct), same GSM8K instruction data and template, same batch,
same optimizer (AdamW, clipping) and thread count. Reports tokens/s (non-padding tokens) over the
steps after the first, then the speed-up from packing (--pack at preprocessing) on the same data.

    python benchmarks/sft.py [--steps 6] [--batch 8] [--seq 512] [--rows 256]
    python benchmarks/sft.py --quick     # 4 steps of batch 4, seq <= 512: a few minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def preprocess(rows: Path, prefix: Path, hf_dir: Path, seq: int, pack: bool) -> str:
    cmd = [sys.executable, "tools/preprocess_data.py", "--input", str(rows), "--output-prefix", str(prefix),
           "--handler-name", "AlpacaStyleInstructionHandler", "--map-keys", '{"prompt":"question","response":"answer"}',
           "--prompt-type", "chatml", "--tokenizer-name-or-path", str(hf_dir), "--seq-length", str(seq),
           "--no-progress-bar"] + (["--pack"] if pack else [])
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return str(prefix)


def hf_loop(hf_dir: Path, data: str, steps: int, batch: int, seq: int, threads: int) -> float:
    """Tokens/s of a plain transformers + torch.optim loop on the same samples."""
    from transformers import AutoModelForCausalLM

    from mindr1.data.datasets import InstructionDataset
    from mindr1.training.data import collate

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0, betas=(0.9, 0.95))
    ds = InstructionDataset(data)
    tokens_done, elapsed = 0, 0.0
    for step in range(steps):
        samples = [ds[(step * batch + j) % len(ds)] for j in range(batch)]
        mb = collate(samples, seq)
        labels = torch.where(mb["loss_mask"] > 0, mb["labels"], torch.full_like(mb["labels"], -100))
        t0 = time.perf_counter()
        logits = model(input_ids=mb["tokens"]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step > 0:
            elapsed += time.perf_counter() - t0
            tokens_done += sum(min(len(s["input_ids"]), seq + 1) - 1 for s in samples)
    return tokens_done / elapsed


def mindr1_run(mg_dir: str, data: str, steps: int, batch: int, seq: int, save: Path) -> float:
    """Tokens/s of ``mindr1 sft`` (TP=1, one process) from its own per-step log, after the first step."""
    cmd = [sys.executable, "-m", "mindr1.cli", "sft", f"load={mg_dir}", "finetune=true", f"save={save}",
           f"data_path={data}", f"train_iters={steps}", f"micro_batch_size={batch}", f"global_batch_size={batch}",
           f"seq_length={seq}", "lr=2e-5", "lr_decay_style=constant", "save_interval=0"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    rows = [json.loads(line) for line in open(save / "metrics.jsonl") if '"loss"' in line][1:]
    tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in rows)
    return tokens / sum(r["step_time_s"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 steps of batch 4, seq <= 512 (first step excluded)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch, args.seq, args.rows = 4, 4, 512, 64
    from mindr1.artifacts import gsm8k_path, smollm2_dir

    hf_dir = smollm2_dir()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = tmp / "rows.jsonl"
        rows.write_text("\n".join(open(gsm8k_path("train")).read().splitlines()[:args.rows]) + "\n")
        plain = preprocess(rows, tmp / "plain", hf_dir, args.seq, pack=False)
        packed = preprocess(rows, tmp / "packed", hf_dir, args.seq, pack=True)
        mg = tmp / "mg"
        subprocess.run([sys.executable, "tools/convert_ckpt.py", "--load-model-type", "hf", "--save-model-type", "mg",
                        "--load-dir", str(hf_dir), "--save-dir", str(mg)], cwd=ROOT, check=True, capture_output=True)
        hf_tps = hf_loop(hf_dir, plain, args.steps, args.batch, args.seq, args.threads)
        m_tps = mindr1_run(str(mg), plain, args.steps, args.batch, args.seq, tmp / "run_plain")
        p_tps = mindr1_run(str(mg), packed, args.steps, max(1, args.batch // 4), args.seq, tmp / "run_packed")
    print(f"SmolLM2-135M-Instruct, GSM8K chatml, batch {args.batch}, seq <= {args.seq}, {args.steps} steps "
          f"(first excluded), {args.threads} threads")
    print(f"  plain PyTorch/HF loop : {hf_tps:8.1f} tokens/s  (baseline)")
    print(f"  mindr1 sft TP=1       : {m_tps:8.1f} tokens/s  ratio {m_tps / hf_tps:.2f}x")
    print(f"  mindr1 sft packed     : {p_tps:8.1f} tokens/s  ratio {p_tps / hf_tps:.2f}x vs the plain loop, "
          f"{p_tps / m_tps:.2f}x vs unpacked (batch {max(1, args.batch // 4)} packed sequences of {args.seq})")
    load = os.getloadavg()
    print(f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

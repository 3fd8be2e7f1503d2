"""GRPO steps: two steps of the tiny config and of real SmolLM2, colocated and separate placement.

Each run goes through :class:`mindr1.rl.controller.GRPOController` (the code ``mindr1 grpo`` runs),
with the vLLM engine when it imports (the HF engine otherwise, said in the details). Checks: both
steps ran with a finite loss; the weight sync is exact, i.e. the engine's log-probs of its own samples
equal the actor's (before step 1: the initial sync; step 2: the sync after an update). Figures: step
time with its phases, and device memory after each phase (per worker: peak since the previous phase,
and the whole device's used memory). On a machine with fewer GPUs than the placement asks for,
Ray is told of as many logical GPUs as needed and every worker sees the one device (the roles
then share it, as colocated workers do).
"""
from __future__ import annotations

import json
import os
import random
from contextlib import contextmanager
from pathlib import Path

from gpu_check.common import REPO, TOL, Result, device_count, dry, engine_kind, work_dir

CONFIGS = {"tiny": REPO / "configs" / "rlxf" / "grpo_tiny_cpu.yaml",
           "smollm2": REPO / "configs" / "rlxf" / "grpo_r1_zero_smollm2_cpu.yaml"}


def prompt_data(tokenizer_dir: Path) -> str:
    """Arithmetic prompts in the R1-Zero template, preprocessed once per check (as tests/e2e/test_grpo.py)."""
    root = work_dir() / "grpo_data"
    prefix = root / "train"
    if (root / "done").exists():
        return str(prefix)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    rows = [{"question": f"{a} + {b} = ?", "answer": str(a + b)}
            for a, b in ((rng.randint(1, 20), rng.randint(1, 20)) for _ in range(32))]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from mindr1.data.preprocess import main as preprocess

    argv = ["--input", str(root / "train.jsonl"), "--output-prefix", str(prefix), "--handler-name",
            "R1AlpacaStyleInstructionHandler", "--prompt-type", "smollm_r1_zero",
            "--templates-file", str(REPO / "configs" / "rlxf" / "templates_r1_zero.json"),
            "--map-keys", '{"prompt":"question","query":"","response":"answer","system":"","history":""}',
            "--dataset-additional-keys", "labels", "--tokenizer-name-or-path", str(tokenizer_dir),
            "--seq-length", "256", "--no-progress-bar"]
    if preprocess(argv) != 0:
        raise RuntimeError(f"preprocessing the GRPO prompts failed (mindr1 preprocess {' '.join(argv)})")
    (root / "done").write_text("")
    return str(prefix)


def tiny_model() -> Path:
    from gpu_check.correctness import random_hf_dir

    return random_hf_dir("tiny-smol", work_dir() / "ckpt" / "grpo_tiny", seed=0)


def overrides(model: str, colocated: bool, kind: str, save: Path, data: str, load: Path) -> list[str]:
    ar = "actor_rollout_ref.actor_rollout"
    out = ["training.train_iters=2", "training.save_interval=0", "training.plot=false", "training.eval_data_path=null",
           "training.worker_timeout_s=300", f"{ar}.data_path={data}", f"{ar}.load={load}", f"{ar}.save={save}",
           f"{ar}.rollout_engine={kind}"]
    if model == "smollm2":  # two mini-batches per step, so the old log-probs (and the sync check) are computed
        n = 2 if dry() else 4
        out += ["training.global_batch_size=4", f"{ar}.ppo_mini_batch_size=2", f"{ar}.n_samples_per_prompt={n}",
                f"{ar}.micro_batch_size={2 * n}", f"{ar}.max_response_length={8 if dry() else 40}"]
    if not colocated:
        out += ["resource_pool.actor_rollout=2", f"{ar}.num_gpus_for_train=1", f"{ar}.num_gpus_for_infer=1"]
        if dry() and model == "tiny":  # one process less on 2 CI cores; the colocated step has the reference
            out.append("algorithm.kl_ctrl.kl_coef=0.0")
    return out


def start_ray_for(cfg) -> dict:
    """On a GPU: a local Ray with as many logical GPUs as the pools need, all on the devices there are."""
    import ray

    from mindr1.rl.workers.cluster import WORKER_ENV

    if dry():
        return {}  # the controller starts its own CPU Ray, as `mindr1 grpo` does
    need = cfg.resource_pool.actor_rollout + (cfg.resource_pool.ref if cfg.use_reference else 0)
    have = device_count()
    env = dict(WORKER_ENV)
    info = {"logical_gpus": max(need, have), "physical_gpus": have}
    if need > have:
        # Ray would give each worker its own CUDA_VISIBLE_DEVICES index, past the real ones; let all see device 0.
        env["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] = "1"
        os.environ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] = "1"
        info["shared"] = f"{need} roles' devices on {have} GPU(s)"
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", num_cpus=need + cfg.resource_pool.reward + 2, num_gpus=max(need, have),
             include_dashboard=False, _node_ip_address="127.0.0.1", runtime_env={"env_vars": env})
    return info


def measured_controller_class():
    from mindr1.rl.controller import GRPOController

    class MeasuredController(GRPOController):
        """The controller, also reading every Megatron/engine worker's device memory after each phase."""

        phase_memory: list

        @contextmanager
        def _timed(self, name: str):
            with super()._timed(name):
                yield
            if not hasattr(self, "phase_memory"):
                self.phase_memory = []
            row = {"step": self.step + 1, "phase": name}
            for group in self.cluster.groups():
                if group.role == "reward":
                    continue
                for rank, mem in enumerate(group.call("device_memory")):
                    row[f"{group.role}{rank}"] = mem
            self.phase_memory.append(row)

    return MeasuredController


def phase_peaks(rows: list[dict]) -> dict:
    """phase -> the largest per-worker peak (device; RSS on CPU) seen in that phase, and the device's used."""
    out: dict = {}
    for row in rows:
        workers = {k: v for k, v in row.items() if isinstance(v, dict)}
        peak = max((v.get("peak_allocated_gib", v.get("rss_gib", 0.0)) for v in workers.values()), default=0.0)
        used = max((v.get("device_used_gib", 0.0) for v in workers.values()), default=0.0)
        cur = out.setdefault(row["phase"], {"worker_peak_gib": 0.0, "device_used_gib": 0.0})
        cur["worker_peak_gib"] = round(max(cur["worker_peak_gib"], peak), 3)
        cur["device_used_gib"] = round(max(cur["device_used_gib"], used), 3)
    return out


def step_grpo(res: Result, model: str, colocated: bool) -> Result:
    import math

    import ray

    from mindr1.artifacts import smollm2_dir
    from mindr1.config.loader import load_config
    from mindr1.rl.config import GRPOConfig

    kind, why = engine_kind()
    res.details["engine"] = kind + (f" ({why})" if why else "")
    smol = smollm2_dir()
    data = prompt_data(smol)
    load = smol if model == "smollm2" and not dry() else tiny_model()
    if model == "smollm2" and dry():
        res.details["reduced"] = ("dry run: tiny random Llama with SmolLM2's tokenizer in the SmolLM2 config "
                                  "(real SmolLM2 GRPO: tests/e2e/test_grpo_r1_zero.py)")
    name = f"{model}_{'colocated' if colocated else 'separate'}"
    save = work_dir() / "grpo" / name
    if save.exists():
        import shutil

        shutil.rmtree(save)
    cfg = load_config(GRPOConfig, CONFIGS[model], overrides(model, colocated, kind, save, str(data), load))
    res.details["placement"] = "colocated (engine sleeps while the actor trains)" if colocated else "separate"
    controller = None
    try:
        res.details["ray"] = start_ray_for(cfg)
        controller = measured_controller_class()(cfg)
        history = controller.train()
        res.details["peak_rss_mb"] = controller.peak_rss_mb()
    finally:
        if controller is not None:
            controller.close()
        if ray.is_initialized():
            ray.shutdown()
    res.check("two_steps", len(history) == 2, len(history), 2)
    bf16 = bool(cfg.actor.bf16) if cfg.actor.bf16 is not None else not dry()
    tol = TOL["sync_logp_bf16_mean"] if bf16 else TOL["sync_logp_fp32_mean"]
    for i, m in enumerate(history, 1):
        res.check(f"step{i}/loss_finite", math.isfinite(m.get("actor/loss", float("nan"))), m.get("actor/loss"), "finite")
        diff = m.get("rollout/logp_abs_diff_mean")
        res.check(f"step{i}/sync_logp_abs_diff_mean", diff is not None and diff < tol, diff, tol)
    last = history[-1]
    res.figures[f"grpo_{name}"] = {
        "dtype": "bf16" if bf16 else "fp32", "engine": kind,
        "step_s": round(last["timing/step_s"], 3),
        "phases_s": {k[7:-2]: round(v, 3) for k, v in last.items() if k.startswith("timing/") and k != "timing/step_s"},
        "gen_tokens_per_s": round(last.get("throughput/gen_tokens_per_s", 0.0), 1),
        "memory_per_phase": phase_peaks([r for r in getattr(controller, "phase_memory", []) if r["step"] == 2]
                                        or getattr(controller, "phase_memory", [])),
    }
    return res

"""The single-controller GRPO loop (``mindr1 grpo --config configs/rlxf/X.yaml key.sub=value``).

One driver process holds the loop; the work runs in Ray worker groups (see ``mindr1.rl.workers``):

    sample prompts -> rollout (generate) -> rewards -> reference log-probs -> old log-probs
    -> group advantages -> actor updates -> weight sync -> log -> checkpoint

``train()`` -> ``train_step()`` -> one small method per phase. Every phase is timed. A worker
that dies or stops answering raises ``WorkerError`` naming its role and rank; the run stops
with that message (exit code 1) and resumes from its last checkpoint when started again.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch

from mindr1.config import ConfigError, load_config, to_dict
from mindr1.rl.batch import RolloutBatch
from mindr1.rl.config import GRPOConfig
from mindr1.rl.prompts import PromptSource, load_prompts
from mindr1.rl.workers.group import WorkerError


class GRPOController:
    """Owns the worker groups, the prompt order, the KL coefficient and the metrics of a run."""

    def __init__(self, cfg: GRPOConfig):
        from mindr1.rl.algos import make_kl_controller
        from mindr1.rl.workers.cluster import build_cluster, start_ray
        from mindr1.rl.workers.megatron_worker import resolve_arch
        from mindr1.rl.workers.cluster import actor_spec

        self.cfg = cfg
        self.arch, _ = resolve_arch(actor_spec(cfg))
        self.prompts = load_prompts(cfg.actor.data_path, cfg.actor.dataset_category, cfg.training.tokenizer_name_or_path,
                                    cfg.actor.max_prompt_length)
        self.eval_prompts = (load_prompts(cfg.training.eval_data_path, None, cfg.training.tokenizer_name_or_path,
                                          cfg.actor.max_prompt_length) if cfg.training.eval_data_path else None)
        kl = cfg.algorithm.kl_ctrl
        self.kl_ctrl = make_kl_controller(kl.type, kl.kl_coef, kl.target_kl, kl.horizon)
        self.source = PromptSource(len(self.prompts), cfg.training.global_batch_size, cfg.training.seed)
        self.kind = start_ray(cfg)
        self.cluster = build_cluster(cfg, self.kind, self.arch)
        self.step = self._resume()
        self.timings: dict[str, float] = {}
        self.logger = self._make_logger()
        self._write_workers_file()

    # ------------------------------------------------------------------ setup

    def _resume(self) -> int:
        state = self.cluster.actor.call("resume_state")[0]
        if not state:
            return 0
        self.source.load_state_dict(state["source"])
        self.kl_ctrl.load_state_dict(state["kl_ctrl"])
        torch.set_rng_state(state["torch_rng"])
        print(f"[mindr1] resuming GRPO from step {state['step']} ({self.cfg.actor.save})", flush=True)
        return int(state["step"])

    def _make_logger(self):
        from mindr1.training.logger import MetricsLogger

        save = self.cfg.actor.save
        tb = self.cfg.training.tensorboard_dir or (str(Path(save) / "tensorboard") if save else None)
        return MetricsLogger(self.cfg.training.train_iters, jsonl_path=Path(save) / "metrics.jsonl" if save else None,
                             tensorboard_dir=tb, wandb_project=self.cfg.training.wandb_project, run_name="grpo",
                             start_step=self.step, config=to_dict(self.cfg))

    def _write_workers_file(self) -> None:
        """SAVE/workers.json: role, rank, pid and node of every worker (what an operator kills or inspects)."""
        import json

        if self.cfg.actor.save:
            path = Path(self.cfg.actor.save) / "workers.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.cluster.describe(), indent=1))

    # ------------------------------------------------------------------ loop

    def train(self) -> list[dict]:
        cfg, history = self.cfg.training, []
        stop = cfg.train_iters if cfg.exit_after_iters is None else min(cfg.train_iters, self.step + cfg.exit_after_iters)
        with self._timed("sync"):
            self.sync_weights()
        if self.eval_prompts is not None and self.step == 0:
            self._log(0, self.evaluate())
        while self.step < stop:
            metrics = self.train_step()
            self.step += 1
            history.append(metrics)
            self._log(self.step, metrics)
            self.logger.advance()
            if self.eval_prompts is not None and (self.step == cfg.train_iters or
                                                  (cfg.eval_interval and self.step % cfg.eval_interval == 0)):
                self._log(self.step, self.evaluate())
            if self.cfg.actor.save and ((cfg.save_interval and self.step % cfg.save_interval == 0)
                                        or self.step == cfg.train_iters):
                self.save()
        return history

    def train_step(self) -> dict:
        from mindr1.rl.algos import get_adv_est

        t0 = time.perf_counter()
        self.timings = {}
        items = [self.prompts[i] for i in self.source.next_indices()]
        with self._timed("generate"):
            batch = self.generate([it["prompt_ids"] for it in items])
        with self._timed("reward"):
            metrics = self.score(batch, items)
        if self.cluster.ref is not None:
            with self._timed("reference"):
                batch.ref_logp_BR = self._log_probs(self.cluster.ref, self.cfg.ref.micro_batch_size, batch)
        if self._needs_old_logp():
            with self._timed("old_logp"):
                batch.old_logp_BR = self._log_probs(self.cluster.actor, self.cfg.actor.micro_batch_size, batch)
            metrics.update(sync_check(batch, self.cfg.actor.temperature))
        adv_B, adv_metrics = get_adv_est(self.cfg.algorithm.adv_estimator)(batch.rewards_B, batch.group_size)
        batch.advantages_B = adv_B
        metrics.update({k: float(v) for k, v in adv_metrics.items()})
        with self._timed("update"):
            metrics.update(self.update(batch))
        with self._timed("sync"):
            self.sync_weights()
        self.kl_ctrl.update(metrics.get("actor/kl_loss", metrics.get("actor/approx_kl", 0.0)),
                            self.cfg.training.global_batch_size)
        step_time = time.perf_counter() - t0
        metrics.update(batch_metrics(batch))
        metrics.update({f"timing/{k}_s": v for k, v in self.timings.items()})
        metrics.update({"timing/step_s": step_time, "kl_coef": self.kl_ctrl.value,
                        "throughput/gen_tokens_per_s": batch.num_response_tokens / max(self.timings["generate"], 1e-9),
                        "throughput/tokens_per_s": int(batch.tokens_BS.ne(0).sum()) / step_time,
                        "throughput/prompts_per_s": len(items) / step_time})
        return metrics

    @contextmanager
    def _timed(self, name: str):
        t0 = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def _needs_old_logp(self) -> bool:
        """On-policy (one epoch, one mini-batch): the old log-probs equal the current ones, detached."""
        a = self.cfg.actor
        return a.ppo_epochs > 1 or a.ppo_mini_batch_size != self.cfg.training.global_batch_size

    # ------------------------------------------------------------------ phases

    def generate(self, prompt_ids: list, greedy: bool = False) -> RolloutBatch:
        """Split the prompts over the rollout engines; one group per prompt back, in order."""
        from mindr1.rollout.base import SamplingParams

        a, engines = self.cfg.actor, self.cluster.rollout
        n = 1 if greedy else a.n_samples_per_prompt
        per = math.ceil(len(prompt_ids) / engines.world_size)
        parts = [prompt_ids[r * per:(r + 1) * per] for r in range(engines.world_size)]
        args = []
        for rank, part in enumerate(parts):
            seed = None if greedy else self.cfg.training.seed * 1_000_003 + self.step * 1_009 + rank
            params = SamplingParams(n=n, temperature=0.0 if greedy else a.temperature, top_p=a.top_p,
                                    top_k=a.top_k, max_tokens=a.max_response_length, seed=seed)
            args.append(([list(map(int, p)) for p in part], params))
        refs = [actor.generate.remote(*arg) for actor, arg in zip(engines.actors, args) if arg[0]]
        groups = [g for out in engines.wait(refs, "generate") for g in out]
        if self.cfg.colocated and not greedy:
            engines.call("sleep")
        return RolloutBatch.from_completions([list(map(int, p)) for p in prompt_ids], groups, self.prompts.pad_id)

    def score(self, batch: RolloutBatch, items: list[dict]) -> dict:
        """Rewards (with the missing-EOS penalty) into ``batch.rewards_B``; reward metrics back."""
        from mindr1.rl.algos import apply_missing_eos_penalty

        out = self._rewards(batch, items)
        rewards_B = torch.tensor(out["rewards"], dtype=torch.float32)
        if self.cfg.algorithm.missing_eos_penalty:
            rewards_B = apply_missing_eos_penalty(rewards_B, batch.finished_B, self.cfg.algorithm.missing_eos_penalty)
        batch.rewards_B = rewards_B
        return reward_metrics(out["scores"], rewards_B)

    def _rewards(self, batch: RolloutBatch, items: list[dict]) -> dict:
        n = batch.group_size
        prompts = [self.prompts.prompt_text(it) for it in items for _ in range(n)]
        labels = [it.get("ground_truth") for it in items for _ in range(n)]
        completions = self.prompts.decode_responses(batch)
        group = self.cluster.reward
        per = math.ceil(len(completions) / group.world_size)
        refs = [actor.score.remote(prompts[i:i + per], completions[i:i + per], labels[i:i + per])
                for actor, i in zip(group.actors, range(0, len(completions), per))]
        outs = group.wait(refs, "score")
        scores = {k: [v for o in outs for v in o["scores"][k]] for k in outs[0]["scores"]}
        return {"rewards": [r for o in outs for r in o["rewards"]], "scores": scores, "completions": completions}

    def _log_probs(self, group, micro_batch_size: int, batch: RolloutBatch) -> torch.Tensor:
        import ray

        from mindr1.rl.workers.megatron_worker import assemble_dp

        ref = ray.put(batch)
        return assemble_dp(group.call("compute_log_prob", ref, micro_batch_size, self.cfg.actor.temperature))

    def update(self, batch: RolloutBatch) -> dict:
        import ray

        from mindr1.rl.workers.actor import SHARE_METRICS

        results = [r for r in self.cluster.actor.call("update_actor", ray.put(batch), self.step, self.kl_ctrl.value,
                                                      self.cfg.training.seed) if r is not None]
        keys = [k for k in results[0] if k != "dp_rank"]
        return {k: (sum(r[k] for r in results) if k in SHARE_METRICS else sum(r[k] for r in results) / len(results))
                for k in keys}

    def sync_weights(self) -> None:
        """Actor -> object-store buckets -> every rollout engine (woken first when colocated)."""
        refs = next(r for r in self.cluster.actor.call("export_weights", self.cfg.actor.weight_sync_bucket_mb)
                    if r is not None)
        if self.cfg.colocated:
            self.cluster.rollout.call("wake_up")
        self.cluster.rollout.call("load_weights", refs)

    def evaluate(self) -> dict:
        """Greedy completions of the first ``eval_samples`` held-out prompts, scored by ``mindr1.eval``
        (accuracy = pass@1, format, lengths: what ``mindr1 eval`` gives the checkpoint saved at this
        step); the training reward on them too. The completions go to ``SAVE/eval/step_N.jsonl``."""
        from mindr1.eval.heldout import heldout_metrics, write_heldout_samples

        cfg = self.cfg.training
        items = [self.eval_prompts[i] for i in range(min(cfg.eval_samples, len(self.eval_prompts)))]
        t0 = time.perf_counter()
        batch = self.generate([it["prompt_ids"] for it in items], greedy=True)
        out = self._rewards(batch, items)
        metrics, records = heldout_metrics([self.eval_prompts.prompt_text(it) for it in items], out["completions"],
                                           [it.get("ground_truth") for it in items], batch.response_len_B.tolist(),
                                           batch.finished_B.tolist(), require_format=cfg.eval_require_format)
        metrics.update({"eval/reward": sum(out["rewards"]) / len(out["rewards"]),
                        "eval/time_s": time.perf_counter() - t0})
        for name, values in out["scores"].items():
            valid = [v for v in values if v is not None]
            metrics[f"eval/rewards/{name}"] = sum(valid) / len(valid) if valid else float("nan")
        if self.cfg.actor.save:
            write_heldout_samples(Path(self.cfg.actor.save) / "eval" / f"step_{self.step:07d}.jsonl", records, self.step)
        return metrics

    def save(self) -> None:
        state = {"step": self.step, "source": self.source.state_dict(), "kl_ctrl": self.kl_ctrl.state_dict(),
                 "torch_rng": torch.get_rng_state()}
        self.cluster.actor.call("save_checkpoint", self.step, state)

    def _log(self, step: int, metrics: dict) -> None:
        clean = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        self.logger.log(step, clean, console=False)
        if step % self.cfg.training.log_interval == 0 or any(k.startswith("eval/") for k in clean):
            line = console_line(step, self.cfg.training.train_iters, clean)
            (self.logger.bar.write if self.logger.bar else print)(line)
            sys.stdout.flush()

    def peak_rss_mb(self) -> dict:
        import resource

        out = {"driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
        for group in self.cluster.groups():
            for rank, mb in enumerate(group.call("peak_rss_mb")):
                out[f"{group.role}{rank}"] = mb
        return out

    def close(self) -> None:
        self.logger.close()
        self.cluster.shutdown()
        if self.cfg.training.plot and self.cfg.actor.save:
            from mindr1.rl.plot import plot_run

            plot_run(Path(self.cfg.actor.save) / "metrics.jsonl", Path(self.cfg.actor.save) / "grpo_curves.png")


# ---------------------------------------------------------------------- metrics


def reward_metrics(scores: dict, rewards_B: torch.Tensor) -> dict:
    """Mean and std of the combined reward and of each verifier (accuracy and format rate among them)."""
    out = {"reward/mean": float(rewards_B.mean()), "reward/std": float(rewards_B.std()) if len(rewards_B) > 1 else 0.0}
    for name, values in scores.items():
        valid = torch.tensor([v for v in values if v is not None], dtype=torch.float32)
        if len(valid):
            out[f"rewards/{name}"] = float(valid.mean())
            out[f"rewards/{name}_std"] = float(valid.std()) if len(valid) > 1 else 0.0
    return out


def batch_metrics(batch: RolloutBatch) -> dict:
    lengths = batch.response_len_B.float()
    return {"response_length/mean": float(lengths.mean()), "response_length/max": float(lengths.max()),
            "response_length/truncated_frac": float((~batch.finished_B).float().mean()),
            "prompt_length/mean": float(batch.prompt_len_B.float().mean())}


def sync_check(batch: RolloutBatch, temperature: float) -> dict:
    """|engine log-prob - actor log-prob| on the sampled tokens: ~0 when the weight sync is right.

    The engine reports raw (temperature 1) log-probs, so the check applies at temperature 1 only.
    """
    if temperature != 1.0 or batch.old_logp_BR is None or batch.rollout_logp_BR is None:
        return {}
    mask_BR = batch.response_mask_BR
    diff_BR = (batch.old_logp_BR - batch.rollout_logp_BR).abs() * mask_BR
    return {"rollout/logp_abs_diff_mean": float(diff_BR.sum() / mask_BR.sum().clamp(min=1)),
            "rollout/logp_abs_diff_max": float(diff_BR.max())}


CONSOLE_KEYS = ("reward/mean", "rewards/acc", "rewards/format", "reward/zero_std_group_frac", "response_length/mean",
                "actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/clip_frac", "timing/step_s",
                "throughput/gen_tokens_per_s", "eval/reward", "eval/acc", "eval/format")


def console_line(step: int, total: int, metrics: dict) -> str:
    parts = [f"{k} {metrics[k]:.4g}" for k in CONSOLE_KEYS if k in metrics]
    phases = [f"{k[7:-2]} {v:.1f}s" for k, v in metrics.items() if k.startswith("timing/") and k != "timing/step_s"]
    return f"[grpo] step {step}/{total} | " + " | ".join(parts + phases)


# ---------------------------------------------------------------------- entry point


def run(cfg: GRPOConfig) -> list[dict]:
    """Run GRPO for ``cfg``; returns the per-step metrics. Raises WorkerError when a worker is lost."""
    import ray

    controller = None
    try:
        controller = GRPOController(cfg)
        history = controller.train()
        rss = controller.peak_rss_mb()
        print(f"[grpo] peak RSS MiB: {', '.join(f'{k} {v:.0f}' for k, v in rss.items())} "
              f"(total {sum(rss.values()):.0f})", flush=True)
        return history
    finally:
        if controller is not None:
            controller.close()
        if ray.is_initialized():
            ray.shutdown()


def main(argv: Optional[list[str]] = None) -> int:
    from mindr1.training.config import flags_to_overrides

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print("usage: mindr1 grpo --config configs/rlxf/X.yaml [key.sub=value ...]\n"
              "every key, its default and meaning: mindr1 config grpo")
        return 0
    config_path, overrides = flags_to_overrides(argv)
    try:
        cfg = load_config(GRPOConfig, config_path, overrides)
    except ConfigError as exc:
        print(f"mindr1 grpo: config error: {exc}", file=sys.stderr)
        return 2
    try:
        run(cfg)
    except WorkerError as exc:
        print(f"mindr1 grpo: stopped: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

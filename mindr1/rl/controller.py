"""The single-controller GRPO loop (``mindr1 grpo --config configs/rlxf/X.yaml key.sub=value``).

One driver process holds the loop; the work runs in Ray worker groups (see ``mindr1.rl.workers``):

    sample prompts -> rollout (generate) -> rewards -> reference log-probs -> old log-probs
    -> group advantages -> actor updates -> weight sync -> log -> checkpoint

``train()`` -> ``train_step()`` -> one small method per phase. Every phase is timed.

DAPO's dynamic sampling repeats generate -> rewards for more prompts until the batch holds
``global_batch_size`` groups whose rewards differ (``algorithm.max_gen_rounds`` rounds at most).
With ``max_staleness: 1`` (separate placement) the next step's first round is started as soon as
this step's batch is in, so the engines generate it, with the weights before this step's update,
while this step is scored and trained; it is collected before the weight sync, and saved with
the checkpoint so a resumed run trains on the very batch the uninterrupted one would. A worker
that dies or stops answering raises ``WorkerError`` naming its role and rank; the run stops
with that message (exit code 1) and resumes from its last checkpoint when started again.
"""
from __future__ import annotations

import collections
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
        self.prefetched: Optional[tuple] = None   # max_staleness 1: (RolloutBatch, prompt indices, generation s)
        self.invalid_completions: collections.Counter = collections.Counter()  # non-text completions, by reason
        self.pending: Optional[tuple] = None      # ... still being generated: (refs, prompt indices, launched at)
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
        if state.get("prefetched"):
            saved = state["prefetched"]
            self.prefetched = (RolloutBatch(**saved["batch"]), list(saved["indices"]), 0.0)
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
        self.timings, self.gen_seconds = {}, 0.0
        batch, items, metrics = self.collect()
        if self.cluster.ref is not None:
            with self._timed("reference"):
                batch.ref_logp_BR = self._log_probs(self.cluster.ref, self.cfg.ref.micro_batch_size, batch)
        if self._needs_old_logp():
            with self._timed("old_logp"):
                batch.old_logp_BR = self._log_probs(self.cluster.actor, self.cfg.actor.micro_batch_size, batch)
        metrics.update(self.behaviour_checks(batch))
        adv_B, adv_metrics = get_adv_est(self.cfg.algorithm.adv_estimator)(batch.rewards_B, batch.group_size)
        batch.advantages_B = adv_B
        metrics.update({k: float(v) for k, v in adv_metrics.items()})
        with self._timed("update"):
            metrics.update(self.update(batch))
        metrics.update(self.finish_prefetch())
        with self._timed("sync"):
            self.sync_weights()
        self._warn_mismatch(metrics)
        self.kl_ctrl.update(metrics.get("actor/kl_loss", metrics.get("actor/approx_kl", 0.0)),
                            self.cfg.training.global_batch_size * self.cfg.actor.n_samples_per_prompt)
        step_time = time.perf_counter() - t0
        metrics.update(batch_metrics(batch))
        metrics.update({f"timing/{k}_s": v for k, v in self.timings.items()})
        metrics.update({"timing/step_s": step_time, "kl_coef": self.kl_ctrl.value,
                        "throughput/gen_tokens_per_s": metrics["rollout/generated_tokens"] / max(self.gen_seconds, 1e-9),
                        "throughput/tokens_per_s": int(batch.tokens_BS.ne(0).sum()) / step_time,
                        "throughput/prompts_per_s": len(items) / step_time})
        return metrics

    # ------------------------------------------------------------------ the batch of a step

    def collect(self) -> tuple[RolloutBatch, list[dict], dict]:
        """This step's scored batch: one round, or DAPO's dynamic sampling; then the next step's prefetch."""
        from mindr1.rl.algos import varied_groups

        alg, need = self.cfg.algorithm, self.cfg.training.global_batch_size
        rounds, drawn, tokens, kept, rest, all_rewards, all_scores = 0, 0, 0, [], [], [], {}
        while True:
            batch, items = self._generate_round(rounds)
            rounds, drawn, tokens = rounds + 1, drawn + len(items), tokens + batch.num_response_tokens
            with self._timed("reward"):
                scores = self.score(batch, items)
            all_rewards.append(batch.rewards_B)
            for name, values in scores.items():
                all_scores.setdefault(name, []).extend(values)
            if not alg.dynamic_sampling:
                kept, rest = [(batch, items)], []
                break
            varied_G = varied_groups(batch.rewards_B, batch.group_size)
            kept += [(_groups(batch, varied_G), [it for it, v in zip(items, varied_G) if v])]
            rest += [(_groups(batch, ~varied_G), [it for it, v in zip(items, varied_G) if not v])]
            if sum(len(i) for _, i in kept) >= need or rounds >= alg.max_gen_rounds:
                break
        if self.cfg.colocated:
            self.cluster.rollout.call("sleep")
        batch, items, n_varied = self._assemble(kept, rest, need)
        metrics = reward_metrics(all_scores, torch.cat(all_rewards))
        metrics.update({f"rewards/{reason}": float(n) for reason, n in self.invalid_completions.items()})
        self.invalid_completions.clear()
        metrics["rollout/generated_tokens"] = float(tokens)
        if alg.dynamic_sampling:
            metrics.update(self._dynamic_sampling_report(rounds, drawn, n_varied, need, torch.cat(all_rewards)))
        if alg.overlong_filter:
            batch.loss_mask_B = batch.finished_B.float()
            metrics["actor/overlong_filtered_frac"] = float(1.0 - batch.loss_mask_B.mean())
        self._launch_prefetch()
        return batch, items, metrics

    def _generate_round(self, round_: int) -> tuple[RolloutBatch, list[dict]]:
        """Round 0 from the prefetch when there is one, else freshly drawn prompts generated now."""
        if round_ == 0 and (self.prefetched is not None or self.pending is not None):
            self.finish_prefetch()
            batch, indices, seconds = self.prefetched
            self.prefetched = None
            self.gen_seconds += seconds
            return batch, [self.prompts[i] for i in indices]
        items = [self.prompts[i] for i in self.source.next_indices()]
        with self._timed("generate"):
            batch = self.generate([it["prompt_ids"] for it in items], round_=round_)
        return batch, items

    def _assemble(self, kept: list, rest: list, need: int) -> tuple[RolloutBatch, list[dict], int]:
        """The first ``need`` groups with a signal; when rounds ran out, topped up with zero-variance groups."""
        parts = [(b, i) for b, i in kept if i]
        n_varied = min(sum(len(i) for _, i in parts), need)
        missing = need - sum(len(i) for _, i in parts)
        for b, i in rest:
            if missing <= 0:
                break
            take = min(missing, len(i))
            parts.append((b.select(slice(0, take * b.group_size)), i[:take]))
            missing -= take
        batch = RolloutBatch.concat([b for b, _ in parts], self.prompts.pad_id) if len(parts) > 1 else parts[0][0]
        items = [it for _, i in parts for it in i]
        if len(items) > need:
            batch, items = batch.select(slice(0, need * batch.group_size)), items[:need]
        return batch, items, n_varied

    def _dynamic_sampling_report(self, rounds: int, drawn: int, n_varied: int, need: int, rewards_B) -> dict:
        from mindr1.rl.algos import zero_variance_group_fraction

        exhausted = n_varied < need
        if exhausted:
            print(f"[grpo] step {self.step + 1}: dynamic sampling found {n_varied} of {need} groups with reward "
                  f"variance in {rounds} rounds (algorithm.max_gen_rounds {self.cfg.algorithm.max_gen_rounds}); "
                  f"training on them and {need - n_varied} zero-variance groups", flush=True)
        return {"dynamic_sampling/rounds": float(rounds), "dynamic_sampling/prompts_drawn": float(drawn),
                "dynamic_sampling/kept_groups": float(n_varied),
                "dynamic_sampling/prompts_per_kept_group": drawn / max(n_varied, 1),
                "dynamic_sampling/exhausted": float(exhausted),
                "dynamic_sampling/drawn_zero_std_group_frac": float(zero_variance_group_fraction(
                    rewards_B, self.cfg.actor.n_samples_per_prompt))}

    # ------------------------------------------------------------------ one-step asynchronous rollout

    def _launch_prefetch(self) -> None:
        """max_staleness 1: start generating the next step's first round now (engines keep the current weights)."""
        if self.cfg.actor.max_staleness != 1 or self.step + 1 >= self.cfg.training.train_iters:
            return
        indices = self.source.next_indices()
        prompt_ids = [self.prompts[i]["prompt_ids"] for i in indices]
        self.pending = (self._launch_generate(prompt_ids, step=self.step + 1), indices, time.perf_counter())

    def finish_prefetch(self) -> dict:
        """Collect the prefetched round (before the weight sync and the checkpoint); its overlap in metrics."""
        if self.pending is None:
            return {}
        (refs, prompt_ids), indices, launched = self.pending
        self.pending = None
        t0 = time.perf_counter()
        batch, seconds = self._collect_generate(refs, prompt_ids)
        waited = time.perf_counter() - t0
        self.timings["generate"] = self.timings.get("generate", 0.0) + waited
        self.prefetched = (batch, indices, seconds)
        return {"timing/generate_overlap_s": max(0.0, seconds - waited),
                "timing/prefetch_wall_s": time.perf_counter() - launched}

    def _needs_old_logp(self) -> bool:
        """The trainer's pre-update log-probs: needed off-policy (several epochs or mini-batches) and by the
        rollout correction; not on-policy (this forward's, detached) nor with max_staleness 1 (the engines')."""
        a = self.cfg.actor
        if a.max_staleness == 1:
            return False
        return (a.ppo_epochs > 1 or a.ppo_mini_batch_size != self.cfg.training.global_batch_size
                or self.cfg.algorithm.rollout_correction != "none")

    def behaviour_checks(self, batch: RolloutBatch) -> dict:
        """Rollout-correction weights (trainer's pre-update vs the engine's log-probs) and, when the sampling
        temperature is not 1, the log-prob gap from a temperature-1 forward (the engines' log-probs are raw)."""
        from mindr1.rl.algos import logp_mismatch_metrics, rollout_correction_weights

        alg, metrics = self.cfg.algorithm, {}
        if alg.rollout_correction != "none":
            weights_BR, corr = rollout_correction_weights(batch.old_logp_BR, batch.rollout_logp_BR,
                                                          batch.response_mask_BR, mode=alg.rollout_correction,
                                                          level=alg.rollout_correction_level,
                                                          threshold=alg.rollout_correction_threshold)
            batch.is_weights_BR = weights_BR
            metrics.update({k: float(v) for k, v in corr.items()})
        if self.cfg.actor.temperature != 1.0:
            with self._timed("mismatch_check"):
                raw_BR = self._log_probs(self.cluster.actor, self.cfg.actor.micro_batch_size, batch, temperature=1.0)
            gap = logp_mismatch_metrics(raw_BR, batch.rollout_logp_BR, batch.response_mask_BR,
                                        alg.mismatch_threshold)
            metrics.update({k: float(v) for k, v in gap.items()})
        return metrics

    def _warn_mismatch(self, metrics: dict) -> None:
        over, alg = metrics.get("rollout/logp_abs_diff_over_frac"), self.cfg.algorithm
        if over is not None and over > alg.mismatch_warn_frac:
            lag = " (max_staleness 1: the gap includes one update of the policy)" if self.cfg.actor.max_staleness else ""
            print(f"[grpo] warning: step {self.step + 1}: trainer and engine log-probs differ by more than "
                  f"{alg.mismatch_threshold} on {over:.2%} of tokens (max {metrics['rollout/logp_abs_diff_max']:.3g}, "
                  f"mean {metrics['rollout/logp_abs_diff_mean']:.3g}){lag}; check the weight sync and the engine's "
                  "numerics, or set algorithm.rollout_correction", flush=True)

    @contextmanager
    def _timed(self, name: str):
        t0 = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    # ------------------------------------------------------------------ phases

    def generate(self, prompt_ids: list, greedy: bool = False, round_: int = 0) -> RolloutBatch:
        """Split the prompts over the rollout engines; one group per prompt back, in order."""
        batch, seconds = self._collect_generate(*self._launch_generate(prompt_ids, greedy, self.step, round_))
        if not greedy:
            self.gen_seconds = getattr(self, "gen_seconds", 0.0) + seconds
        return batch

    def _launch_generate(self, prompt_ids: list, greedy: bool = False, step: int = 0, round_: int = 0) -> tuple:
        """Start generation on every engine: (refs, prompt ids). Seeds follow (seed, step, round, engine)."""
        from mindr1.rollout.base import SamplingParams

        a, engines = self.cfg.actor, self.cluster.rollout
        n = 1 if greedy else a.n_samples_per_prompt
        per = math.ceil(len(prompt_ids) / engines.world_size)
        parts = [prompt_ids[r * per:(r + 1) * per] for r in range(engines.world_size)]
        args = []
        for rank, part in enumerate(parts):
            seed = None if greedy else self.cfg.training.seed * 1_000_003 + step * 1_009 + round_ * 100_003 + rank
            params = SamplingParams(n=n, temperature=0.0 if greedy else a.temperature, top_p=a.top_p,
                                    top_k=a.top_k, max_tokens=a.max_response_length, seed=seed)
            args.append(([list(map(int, p)) for p in part], params))
        return [actor.generate_timed.remote(*arg) for actor, arg in zip(engines.actors, args) if arg[0]], prompt_ids

    def _collect_generate(self, refs: list, prompt_ids: list) -> tuple[RolloutBatch, float]:
        """The batch and the engines' generation time (the slowest engine's)."""
        outs = self.cluster.rollout.wait(refs, "generate")
        groups = [g for out in outs for g in out["groups"]]
        batch = RolloutBatch.from_completions([list(map(int, p)) for p in prompt_ids], groups, self.prompts.pad_id)
        return batch, max(out["seconds"] for out in outs)

    def score(self, batch: RolloutBatch, items: list[dict]) -> dict:
        """Rewards (with the missing-EOS penalty and overlong shaping) into ``batch.rewards_B``; the verifiers'
        scores back."""
        from mindr1.rl.algos import apply_missing_eos_penalty

        out = self._rewards(batch, items)
        rewards_B = torch.tensor(out["rewards"], dtype=torch.float32)
        alg = self.cfg.algorithm
        if alg.missing_eos_penalty:
            rewards_B = apply_missing_eos_penalty(rewards_B, batch.finished_B, alg.missing_eos_penalty)
        if alg.overlong_buffer_length:
            from mindr1.rl.algos import overlong_reward_penalty

            rewards_B = rewards_B + overlong_reward_penalty(batch.response_len_B, self.cfg.actor.max_response_length,
                                                            alg.overlong_buffer_length, alg.overlong_penalty_factor)
        batch.rewards_B = rewards_B
        self.invalid_completions.update(out["invalid"])
        return out["scores"]

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
        invalid: dict = {}
        for o in outs:
            for reason, count in o.get("invalid", {}).items():
                invalid[reason] = invalid.get(reason, 0) + count
        return {"rewards": [r for o in outs for r in o["rewards"]], "scores": scores, "completions": completions,
                "invalid": invalid}

    def _log_probs(self, group, micro_batch_size: int, batch: RolloutBatch,
                   temperature: Optional[float] = None) -> torch.Tensor:
        import ray

        from mindr1.rl.workers.megatron_worker import assemble_dp

        ref = ray.put(batch)
        temperature = self.cfg.actor.temperature if temperature is None else temperature
        return assemble_dp(group.call("compute_log_prob", ref, micro_batch_size, temperature))

    def update(self, batch: RolloutBatch) -> dict:
        import ray

        from mindr1.rl.workers.actor import combine

        results = [r for r in self.cluster.actor.call("update_actor", ray.put(batch), self.step, self.kl_ctrl.value,
                                                      self.cfg.training.seed) if r is not None]
        keys = [k for k in results[0] if k != "dp_rank"]
        return {k: combine(k, [r[k] for r in results]) for k in keys}

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
        if self.prefetched is not None:  # max_staleness 1: the next step's batch, generated by the previous weights
            batch, indices, _ = self.prefetched
            state["prefetched"] = {"indices": list(indices), "batch": batch_state(batch)}
        t = self.cfg.training
        self.cluster.actor.call("save_checkpoint", self.step, state, t.keep_last_n, t.keep_every_n)

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


def batch_state(batch: RolloutBatch) -> dict:
    """A RolloutBatch as plain tensors and numbers (what a weights_only checkpoint load accepts)."""
    from dataclasses import fields

    return {f.name: getattr(batch, f.name) for f in fields(batch)
            if f.name != "meta" and getattr(batch, f.name) is not None}


def _groups(batch: RolloutBatch, keep_G: torch.Tensor) -> RolloutBatch:
    """The rows of the groups where ``keep_G`` is True."""
    rows_B = keep_G.repeat_interleave(batch.group_size)
    return batch.select(rows_B.nonzero().flatten())


CONSOLE_KEYS = ("reward/mean", "rewards/acc", "rewards/format", "reward/zero_std_group_frac",
                "dynamic_sampling/rounds", "response_length/mean",
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

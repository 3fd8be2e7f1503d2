"""Ray and the four worker groups of a GRPO run, built from ``resource_pool`` and the placement.

Pools (placement groups, one bundle per device; the device is a GPU, the custom "NPU" resource
on Ascend, or a CPU slot): ``actor_rollout`` (colocated: actor rank i and rollout engine i share
bundle i, half a device each; separate: an actor pool of ``num_gpus_for_train`` and a rollout pool
of ``num_gpus_for_infer``), ``ref`` (only with a KL term) and ``reward`` (CPU slots).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from mindr1.rl.config import GRPOConfig
from mindr1.rl.workers.group import RayActorGroup, ResourcePool, device_resource

# Environment every worker process gets: quiet tokenizers, one OpenMP pool set by torch itself.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAY_DEDUP_LOGS": "0"}


def start_ray(cfg: GRPOConfig) -> str:
    """Connect to ``training.ray_address`` / ``RAY_ADDRESS``, or start a local Ray on 127.0.0.1. Returns the device kind.

    Token authentication is on unless the user sets ``RAY_AUTH_MODE=disabled``; a local cluster
    keeps every socket on 127.0.0.1 (see :mod:`mindr1.rl.ray_node`).
    """
    import sys

    from mindr1.rl.ray_node import keep_local, require_auth

    address = cfg.training.ray_address or os.environ.get("RAY_ADDRESS")
    # Ray starts workers at niceness 15 by default; here the workers do all the work, so they must
    # not yield to every other process on the machine (the scripts export the same for `ray start`).
    os.environ.setdefault("RAY_worker_niceness", "0")
    env = {"env_vars": dict(WORKER_ENV)}
    already = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    if not already:
        require_auth(create_token=not address)  # before `import ray`: Ray caches the mode
        if not address:
            keep_local()
    import ray

    if not already:
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=True)
        else:
            # address="local": always a fresh local Ray, never one a `ray start` left on this machine
            ray.init(address="local", num_cpus=cfg.training.ray_num_cpus or _cpus_needed(cfg), include_dashboard=False,
                     _node_ip_address="127.0.0.1", runtime_env=env, log_to_driver=True)
    from mindr1.accelerator import KINDS, Accelerator

    # The cluster's devices decide, not the driver's own: the head node may have none.
    resources = ray.cluster_resources()
    for kind in KINDS:
        name = Accelerator(kind).ray_resource()
        if name and resources.get(name, 0) > 0:
            return kind
    return "cpu"


def _cpus_needed(cfg: GRPOConfig) -> int:
    pool = cfg.resource_pool
    return pool.actor_rollout + (pool.ref if cfg.use_reference else 0) + pool.reward + 1


def worker_threads(cfg: GRPOConfig) -> int:
    """torch threads per worker on CPU: the phases run one after another, so a group shares the cores."""
    if cfg.training.cpu_threads_per_worker > 0:
        return cfg.training.cpu_threads_per_worker
    biggest = max(cfg.actor_devices, cfg.resource_pool.ref if cfg.use_reference else 1, 1)
    return max(1, (os.cpu_count() or 1) // biggest)


@dataclass
class Cluster:
    """The running worker groups and their pools."""

    actor: RayActorGroup
    rollout: RayActorGroup
    reward: RayActorGroup
    ref: Optional[RayActorGroup] = None
    pools: list = field(default_factory=list)

    def groups(self) -> list[RayActorGroup]:
        return [g for g in (self.actor, self.rollout, self.ref, self.reward) if g is not None]

    def describe(self) -> list[dict]:
        return [info for g in self.groups() for info in g.info]

    def shutdown(self) -> None:
        for g in self.groups():
            g.kill()
        for p in self.pools:
            p.remove()


def build_cluster(cfg: GRPOConfig, kind: str, arch) -> Cluster:
    """Start every group (actor first: it resolves the model and resumes from ``save``)."""
    from mindr1.rl.workers.actor import ActorWorker
    from mindr1.rl.workers.reward import RewardWorker
    from mindr1.rl.workers.rollout import RolloutWorker

    if cfg.actor.infer_tensor_parallel_size != 1:
        raise NotImplementedError("infer_tensor_parallel_size > 1 (vLLM's own multi-device executor inside a "
                                  "rollout worker) is not wired yet; use 1 engine per device")
    timeout, threads, resource = cfg.training.worker_timeout_s, worker_threads(cfg), device_resource(kind)
    pools: list[ResourcePool] = []
    built: dict = {}
    try:
        main_pool = ResourcePool("actor_rollout" if cfg.colocated else "actor", cfg.actor_devices, resource,
                                 timeout_s=timeout)
        pools.append(main_pool)
        infer_pool = main_pool if cfg.colocated else ResourcePool("rollout", cfg.infer_devices, resource,
                                                                  timeout_s=timeout)
        if infer_pool is not main_pool:
            pools.append(infer_pool)
        share = 0.5 if cfg.colocated else 1.0
        built["actor"] = RayActorGroup(ActorWorker, "actor", main_pool, cfg.actor_devices,
                                       (threads, actor_spec(cfg), actor_settings(cfg)), share, timeout)
        built["rollout"] = RayActorGroup(RolloutWorker, "rollout", infer_pool, cfg.num_engines,
                                         (threads, arch, cfg.actor.rollout_engine, cfg.training.seed,
                                          cfg.actor.max_prompt_length + cfg.actor.max_response_length),
                                         share, timeout)
        if cfg.use_reference:
            from mindr1.rl.workers.reference import ReferenceWorker

            pools.append(ResourcePool("ref", cfg.resource_pool.ref, resource, timeout_s=timeout))
            built["ref"] = RayActorGroup(ReferenceWorker, "ref", pools[-1], cfg.resource_pool.ref,
                                         (threads, ref_spec(cfg)), 1.0, timeout)
        pools.append(ResourcePool("reward", cfg.resource_pool.reward, "CPU", timeout_s=timeout))
        alg = cfg.algorithm
        built["reward"] = RayActorGroup(RewardWorker, "reward", pools[-1], cfg.resource_pool.reward,
                                        (1, alg.verifier_function, alg.verifier_weight, cfg.reward.gate,
                                         cfg.reward.model), 1.0, timeout)
    except BaseException:
        for g in built.values():
            g.kill()
        for p in pools:
            p.remove()
        raise
    return Cluster(built["actor"], built["rollout"], built["reward"], built.get("ref"), pools)


def actor_spec(cfg: GRPOConfig):
    from mindr1.rl.workers.megatron_worker import ModelSpec

    a = cfg.actor
    return ModelSpec(a.model, a.load, a.tensor_model_parallel_size, a.pipeline_model_parallel_size,
                     cfg.training.seed, a.bf16, cfg.training.worker_timeout_s)


def ref_spec(cfg: GRPOConfig):
    from mindr1.rl.workers.megatron_worker import ModelSpec

    a, r = cfg.actor, cfg.ref
    return ModelSpec(a.model, a.load, r.tensor_model_parallel_size, r.pipeline_model_parallel_size,
                     cfg.training.seed, a.bf16, cfg.training.worker_timeout_s)


def actor_settings(cfg: GRPOConfig):
    from mindr1.rl.workers.actor import ActorSettings

    a, alg = cfg.actor, cfg.algorithm
    steps = cfg.training.train_iters * a.ppo_epochs * (cfg.training.global_batch_size // a.ppo_mini_batch_size)
    return ActorSettings(
        save=a.save, micro_batch_size=a.micro_batch_size, mini_batch_size=a.ppo_mini_batch_size * a.n_samples_per_prompt,
        ppo_epochs=a.ppo_epochs, shuffle=a.shuffle_minibatch, temperature=a.temperature,
        clip_low=a.clip_ratio if a.clip_ratio_low is None else a.clip_ratio_low,
        clip_high=a.clip_ratio if a.clip_ratio_high is None else a.clip_ratio_high, clip_ratio_c=a.clip_ratio_c,
        policy_loss=a.policy_loss, old_logp_from_engine=a.max_staleness == 1,
        mismatch_threshold=alg.mismatch_threshold, entropy_coef=a.entropy_coeff,
        entropy_metric_interval=a.entropy_metric_interval, kl_kind=alg.kl_penalty, agg=a.loss_agg_mode,
        max_response_length=a.max_response_length, lr=a.lr, min_lr=a.min_lr, lr_decay_style=a.lr_decay_style,
        lr_warmup_iters=a.lr_warmup_iters, lr_decay_iters=steps, weight_decay=a.weight_decay,
        adam_beta1=a.adam_beta1, adam_beta2=a.adam_beta2, clip_grad=a.clip_grad,
        use_distributed_optimizer=a.use_distributed_optimizer)

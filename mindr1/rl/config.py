"""The GRPO config (``mindr1 grpo --config configs/rlxf/X.yaml key.sub=value``).

The YAML keeps the recipe's names (MindSpeed-RL / verl): ``training.*``,
``actor_rollout_ref.actor_rollout.*``, ``actor_rollout_ref.ref.*``, ``reward.*``, ``algorithm.*``
and ``resource_pool.*``. Each field is documented (``mindr1 config grpo`` prints them); unknown
keys are errors. :meth:`GRPOConfig.check_sizes` rejects inconsistent batch and device sizes with
the numbers named, before any worker starts.

Units. ``training.global_batch_size`` and ``ppo_mini_batch_size`` count *prompts*; each prompt
brings ``n_samples_per_prompt`` completions. ``micro_batch_size`` counts completions per
data-parallel rank. Devices are GPUs, NPUs, or CPU slots on a machine without either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mindr1.config import ConfigError, ranged
from mindr1.config.loader import checkpoint_retention


@dataclass
class TrainingConfig:
    """Run-level settings: length, batch, logging, checkpoints, cluster."""

    global_batch_size: int = ranged(8, ge=1)
    """Prompts per GRPO step (each sampled n_samples_per_prompt times)."""
    train_iters: int = ranged(10, ge=1)
    """GRPO steps."""
    seed: int = ranged(1234, ge=0)
    """Seed of the prompt order, the sampler and weights not loaded."""
    tokenizer_name_or_path: Optional[str] = None
    """HF tokenizer dir used to decode completions (default: the one recorded by preprocessing)."""
    eval_data_path: Optional[str] = None
    """Held-out prompt dataset prefix; greedy reward/accuracy on it before training, every eval_interval and at the end."""
    eval_interval: int = ranged(0, ge=0)
    """Steps between held-out evaluations (0: only before and after training)."""
    eval_samples: int = ranged(64, ge=1)
    """Held-out prompts per evaluation."""
    eval_require_format: bool = False
    """Held-out accuracy counts an answer only inside <answer> (``mindr1 eval --require-format``)."""
    save_interval: int = ranged(0, ge=0)
    """Steps between checkpoints (0: only at the end)."""
    keep_last_n: Optional[int] = ranged(None, ge=1)
    """Keep only the latest and the N newest iter_* checkpoints (older ones the trainer wrote are deleted;
    unset: keep all). Megatron-LM / HF users know it as save_total_limit."""
    save_total_limit: Optional[int] = ranged(None, ge=1)
    """Alias of keep_last_n."""
    keep_every_n: Optional[int] = ranged(None, ge=1)
    """With keep_last_n: also keep every iteration divisible by this (milestones)."""
    log_interval: int = ranged(1, ge=1)
    """Steps between console lines (every step goes to jsonl/TensorBoard)."""
    tensorboard_dir: Optional[str] = None
    """TensorBoard directory (default: SAVE/tensorboard)."""
    wandb_project: Optional[str] = None
    """Weights & Biases project (only when wandb is installed)."""
    plot: bool = True
    """Write SAVE/grpo_curves.png at the end of the run."""
    ray_address: Optional[str] = None
    """Address of a running Ray cluster (``ray start --head``); default: a local Ray on 127.0.0.1."""
    ray_num_cpus: Optional[int] = ranged(None, ge=1)
    """Logical CPUs of the local Ray (default: what the resource pools need)."""
    worker_timeout_s: float = ranged(600.0, gt=0)
    """Longest wait for any worker call or collective; a dead or stuck worker stops the run."""
    cpu_threads_per_worker: int = ranged(0, ge=0)
    """torch threads per worker process on CPU (0: all cores / the largest group's size)."""
    exit_after_iters: Optional[int] = ranged(None, ge=1)
    """Stop after this many steps of this launch (tests of resume)."""


@dataclass
class ActorRolloutConfig:
    """The policy: Megatron actor (trains) and the rollout engines it feeds."""

    model: Optional[str] = None
    """Model description (configs/model name, YAML or HF dir); default: read from ``load``."""
    load: Optional[str] = None
    """Initial weights: an HF directory or a Megatron checkpoint (tools/convert_ckpt.py output)."""
    save: Optional[str] = None
    """Checkpoint and log directory; a run resumes from its latest checkpoint here."""
    data_path: str = ""
    """Preprocessed prompt dataset (R1AlpacaStyleInstructionHandler, labels kept), or a blend "3,A,1,B"."""
    dataset_category: Optional[str] = None
    """Category per blend part ("1,0"), carried per sample."""
    micro_batch_size: int = ranged(4, ge=1)
    """Completions per micro-batch per data-parallel rank (forward and backward)."""
    ppo_mini_batch_size: int = ranged(8, ge=1)
    """Prompts per optimizer step; must divide training.global_batch_size."""
    ppo_epochs: int = ranged(1, ge=1)
    """Passes over each rollout batch (each epoch: global_batch_size / ppo_mini_batch_size optimizer steps, all
    against the old log-probs taken before the first one)."""
    shuffle_minibatch: bool = False
    """Shuffle samples into mini-batches (seeded per step and epoch)."""
    n_samples_per_prompt: int = ranged(8, ge=1)
    """Completions per prompt: the GRPO group size."""
    temperature: float = ranged(1.0, ge=0)
    """Sampling temperature (also divides the logits of the trainer's log-probs)."""
    top_p: float = ranged(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    top_k: int = ranged(-1, ge=1, also=(-1,))
    """Top-k sampling (-1: off)."""
    max_prompt_length: int = ranged(512, ge=1)
    """Longest prompt in tokens; longer prompts are left-truncated with a warning count in the metrics."""
    max_response_length: int = ranged(256, ge=1)
    """Most new tokens per completion."""
    clip_ratio: float = ranged(0.2, ge=0)
    """PPO clip range (both sides unless clip_ratio_low / clip_ratio_high). GSPO's sequence ratio needs a far smaller
    one (3e-4 / 4e-4 in its paper)."""
    clip_ratio_low: Optional[float] = ranged(None, ge=0)
    """Lower clip range: ratio >= 1 - clip_ratio_low (default: clip_ratio)."""
    clip_ratio_high: Optional[float] = ranged(None, ge=0)
    """Upper clip range: ratio <= 1 + clip_ratio_high; larger than the lower one is DAPO's clip-higher (default:
    clip_ratio)."""
    clip_ratio_c: Optional[float] = ranged(3.0, gt=1)
    """Dual-clip (as verl): for a negative advantage the loss is capped at -A * clip_ratio_c, so a token whose ratio
    ran past it has a bounded loss and no gradient; > 1, null: off. Not used by gspo."""
    policy_loss: str = "clip"
    """Policy loss (registered in mindr1.rl.algos): clip (PPO/GRPO/DAPO) or gspo (sequence-level ratio)."""
    entropy_coeff: float = ranged(0.0, ge=0)
    """Entropy bonus coefficient."""
    entropy_metric_interval: int = ranged(1, ge=0)
    """With entropy_coeff 0, log the policy's entropy every this many steps (0: never, and it is not computed). It is
    computed vocab-parallel, without gathering the vocabulary; with a non-zero entropy_coeff it is every step."""
    loss_agg_mode: str = "token_mean"
    """token_mean, seq_mean_token_mean, seq_mean_token_sum or seq_mean_token_sum_norm."""
    lr: float = ranged(1e-6, ge=0)
    """Peak learning rate."""
    min_lr: float = ranged(0.0, ge=0)
    """Learning rate at the end of the decay."""
    lr_decay_style: str = "constant"
    """constant, linear or cosine."""
    lr_warmup_iters: int = ranged(0, ge=0)
    """Optimizer steps of linear warmup."""
    weight_decay: float = ranged(0.0, ge=0)
    """AdamW weight decay."""
    adam_beta1: float = ranged(0.9, ge=0, lt=1)
    """Adam beta1."""
    adam_beta2: float = ranged(0.99, ge=0, lt=1)
    """Adam beta2."""
    clip_grad: float = ranged(1.0, ge=0)
    """Gradient clipping by global norm (0: off)."""
    use_distributed_optimizer: bool = False
    """Shard optimizer state over DP ranks."""
    bf16: Optional[bool] = None
    """bf16 weights (default: on GPU/NPU, off on CPU)."""
    tensor_model_parallel_size: int = ranged(1, ge=1)
    """Actor TP degree."""
    pipeline_model_parallel_size: int = ranged(1, ge=1)
    """Actor PP degree."""
    num_gpus_for_train: int = ranged(0, ge=0)
    """Separate placement: devices of the actor (0: colocated, the actor uses all of resource_pool.actor_rollout)."""
    num_gpus_for_infer: int = ranged(0, ge=0)
    """Separate placement: devices of the rollout engines (0: colocated with the actor, sleeping while it trains)."""
    infer_tensor_parallel_size: int = ranged(1, ge=1)
    """Devices per rollout engine (vLLM tensor parallelism); engines = inference devices / this."""
    rollout_engine: Optional[str] = None
    """hf or vllm (default: vllm on GPU/NPU, hf on CPU)."""
    weight_sync_bucket_mb: float = ranged(256.0, gt=0)
    """Bucket size of the actor -> engine weight stream."""
    max_staleness: int = ranged(0, ge=0, le=1)
    """0: synchronous (generate, then train on it). 1: one-step asynchronous, needs separate placement: the engines
    generate batch t+1 (with the weights before update t) while the actor trains on batch t; the PPO ratio is then
    taken against the engines' own log-probs of the policy that generated the batch (needs temperature 1, top_p 1,
    top_k -1: the engines report raw log-probs)."""


@dataclass
class RefConfig:
    """The reference policy (frozen initial weights) for the KL penalty."""

    tensor_model_parallel_size: int = ranged(1, ge=1)
    """Reference TP degree."""
    pipeline_model_parallel_size: int = ranged(1, ge=1)
    """Reference PP degree."""
    micro_batch_size: int = ranged(8, ge=1)
    """Completions per forward micro-batch per DP rank."""


@dataclass
class RewardConfig:
    """How completions are scored."""

    verifier: bool = True
    """Score with the rule verifiers of algorithm.verifier_function."""
    model: Optional[str] = None
    """Reward model (filled by the all-scenario stage; unsupported here)."""
    gate: Optional[str] = "acc"
    """Verifier whose score multiplies the others (format pays only on a right answer); null: ungated."""


@dataclass
class KLCtrlConfig:
    """KL coefficient control."""

    type: str = "fixed"
    """fixed or adaptive."""
    kl_coef: float = ranged(0.001, ge=0)
    """KL coefficient (0: no reference model is started)."""
    target_kl: float = ranged(0.1, gt=0)
    """Adaptive control: KL to track."""
    horizon: int = ranged(10000, ge=1)
    """Adaptive control: horizon in responses (completions), as verl: each step moves the coefficient by
    global_batch_size x n_samples_per_prompt / horizon of the clipped error."""


@dataclass
class AlgorithmConfig:
    """GRPO math."""

    adv_estimator: str = "group_norm"
    """Advantage estimator (registered in mindr1.rl.algos): group_norm (GRPO), dr_grpo, rloo (leave-one-out
    baseline), reinforce_plus_plus (batch normalisation), reinforce_plus_plus_baseline."""
    kl_penalty: str = "low_var_kl"
    """KL estimator: k1, k2, k3 / low_var_kl."""
    kl_ctrl: KLCtrlConfig = field(default_factory=KLCtrlConfig)
    """KL coefficient control."""
    verifier_function: list[str] = field(default_factory=lambda: ["acc", "format"])
    """Verifiers (registered names) summed into the reward."""
    verifier_weight: list[float] = ranged(default_factory=lambda: [1.0, 0.5])
    """Weight per verifier."""
    missing_eos_penalty: float = ranged(0.0, ge=0)
    """Subtracted from the reward of completions cut at max_response_length."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and generate for more prompts until
    global_batch_size groups with a signal are in (at most max_gen_rounds rounds of global_batch_size prompts)."""
    max_gen_rounds: int = ranged(10, ge=1)
    """Dynamic sampling: most generation rounds per step; when they run out the step trains on the groups it has,
    filled up with zero-variance ones (no gradient), and says so."""
    overlong_buffer_length: int = ranged(0, ge=0)
    """DAPO overlong reward shaping: a penalty growing linearly over the last this many tokens before
    max_response_length, reaching overlong_penalty_factor there (0: off)."""
    overlong_penalty_factor: float = ranged(1.0, ge=0)
    """DAPO overlong reward shaping: the largest penalty."""
    overlong_filter: bool = False
    """DAPO overlong filtering: responses cut at max_response_length are left out of the loss."""
    rollout_correction: str = "none"
    """Rollout-training mismatch correction (registered in mindr1.rl.algos): none, tis (weight the policy loss by
    min(pi_trainer / pi_engine, C)) or mis (by the ratio where <= C, drop beyond). pi_trainer: the actor's log-probs
    before the update; pi_engine: the engine's own. Needs temperature 1, top_p 1, top_k -1 (the engines report raw
    log-probs, which are the sampling distribution only then)."""
    rollout_correction_level: str = "token"
    """token (a ratio per token) or sequence (the product over the response, the same weight on its tokens)."""
    rollout_correction_threshold: float = ranged(2.0, gt=0)
    """C of tis / mis."""
    mismatch_threshold: float = ranged(1.0, gt=0)
    """|trainer - engine| log-prob gap (nats, temperature 1) counted in rollout/logp_abs_diff_over_frac."""
    mismatch_warn_frac: float = ranged(0.001, ge=0, le=1)
    """Warn, naming the step, when more than this share of tokens is over mismatch_threshold."""


@dataclass
class ResourcePoolConfig:
    """Devices per role (GPUs, NPUs, or CPU slots)."""

    actor_rollout: int = ranged(1, ge=1)
    """Devices of actor + rollout (colocated: shared; separate: num_gpus_for_train + num_gpus_for_infer)."""
    ref: int = ranged(1, ge=0)
    """Devices of the reference group (ref TP x PP x its DP)."""
    reward: int = ranged(1, ge=1)
    """Reward workers (CPU processes; devices only for a reward model)."""


@dataclass
class ActorRolloutRefConfig:
    """Actor/rollout and reference settings."""

    actor_rollout: ActorRolloutConfig = field(default_factory=ActorRolloutConfig)
    """The policy and its rollout engines."""
    ref: RefConfig = field(default_factory=RefConfig)
    """The reference policy."""


def _check_verifiers(names: list[str]) -> None:
    import mindr1.rl.task_rewards  # noqa: F401  (registers the task verifiers)
    from mindr1.rl.rewards import list_verifiers

    unknown = [n for n in names if n not in list_verifiers()]
    if unknown:
        raise ConfigError(f"algorithm.verifier_function: unknown verifier(s) {unknown}; registered: {list_verifiers()}")


@dataclass
class GRPOConfig:
    """GRPO on Ray: reasoning RL (stage 2) and R1-Zero."""

    training: TrainingConfig = field(default_factory=TrainingConfig)
    """Run-level settings."""
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    """Policy, rollout and reference."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Scoring."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """GRPO math."""
    resource_pool: ResourcePoolConfig = field(default_factory=ResourcePoolConfig)
    """Devices per role."""

    def __post_init__(self):
        ar, alg = self.actor_rollout_ref.actor_rollout, self.algorithm
        self._check_names()
        if len(alg.verifier_weight) != len(alg.verifier_function):
            raise ConfigError(f"algorithm.verifier_weight has {len(alg.verifier_weight)} entries for "
                              f"{len(alg.verifier_function)} verifier_function entries {alg.verifier_function}")
        _check_verifiers(alg.verifier_function)
        if self.reward.gate is not None and self.reward.gate not in alg.verifier_function:
            raise ConfigError(f"reward.gate: {self.reward.gate!r} is not one of algorithm.verifier_function "
                              f"{alg.verifier_function}")
        if self.reward.model:
            raise ConfigError("reward.model: reward-model scoring is not available yet (all-scenario stage); "
                              "use reward.verifier with algorithm.verifier_function")
        if not self.reward.verifier:
            raise ConfigError("reward.verifier: false leaves nothing to score completions with")
        if ar.n_samples_per_prompt < 2:
            raise ConfigError(f"actor_rollout_ref.actor_rollout.n_samples_per_prompt is {ar.n_samples_per_prompt}; "
                              "group advantages need >= 2")
        if ar.rollout_engine not in (None, "hf", "vllm"):
            raise ConfigError(f"actor_rollout_ref.actor_rollout.rollout_engine: {ar.rollout_engine!r} is not hf or vllm")
        t = self.training
        t.keep_last_n = checkpoint_retention(t.keep_last_n, t.save_total_limit, "training.")
        self._check_algorithm()
        self.check_sizes()

    def _check_names(self) -> None:
        """Names picked from mindr1.rl.algos: the allowed ones are what its registries and tables hold."""
        from mindr1.rl import algos

        ar, alg = self.actor, self.algorithm
        for key, value, allowed in (
                ("actor_rollout_ref.actor_rollout.loss_agg_mode", ar.loss_agg_mode, algos.AGG_MODES),
                ("actor_rollout_ref.actor_rollout.policy_loss", ar.policy_loss, sorted(algos.POLICY_LOSSES)),
                ("algorithm.adv_estimator", alg.adv_estimator, sorted(algos.ADV_ESTIMATORS)),
                ("algorithm.kl_penalty", alg.kl_penalty, algos.KL_KINDS),
                ("algorithm.kl_ctrl.type", alg.kl_ctrl.type, algos.KL_CTRL_TYPES),
                ("algorithm.rollout_correction", alg.rollout_correction, sorted(algos.ROLLOUT_CORRECTIONS)),
                ("algorithm.rollout_correction_level", alg.rollout_correction_level, algos.CORRECTION_LEVELS)):
            if value not in allowed:
                raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")

    def _check_algorithm(self) -> None:
        """Ranges and combinations of the DAPO / GSPO / correction / staleness settings."""
        a, alg, ar = self.actor, self.algorithm, "actor_rollout_ref.actor_rollout"
        if not 0 <= alg.overlong_buffer_length <= a.max_response_length:
            raise ConfigError(f"algorithm.overlong_buffer_length: {alg.overlong_buffer_length} must be in "
                              f"[0, {ar}.max_response_length {a.max_response_length}]")
        raw = a.temperature == 1.0 and a.top_p == 1.0 and a.top_k in (-1, 0)
        if a.max_staleness == 1:
            if self.colocated:
                raise ConfigError(f"{ar}.max_staleness 1 needs separate placement ({ar}.num_gpus_for_infer > 0): "
                                  "colocated engines cannot generate while the actor trains")
            if alg.rollout_correction != "none":
                raise ConfigError(f"algorithm.rollout_correction {alg.rollout_correction!r} is for max_staleness 0; "
                                  "with max_staleness 1 the ratio is already taken against the engines' log-probs")
        needs_raw = a.max_staleness == 1 or alg.rollout_correction != "none"
        if needs_raw and not raw:
            raise ConfigError(f"{ar}.max_staleness 1 / algorithm.rollout_correction use the engines' log-probs as the "
                              "behaviour policy; the engines report raw log-probs (temperature 1, before top-k/top-p), "
                              f"which are that only with temperature 1, top_p 1, top_k -1 (got {a.temperature}, "
                              f"{a.top_p}, {a.top_k})")

    # ------------------------------------------------------------------ derived sizes

    @property
    def actor(self) -> ActorRolloutConfig:
        return self.actor_rollout_ref.actor_rollout

    @property
    def ref(self) -> RefConfig:
        return self.actor_rollout_ref.ref

    @property
    def colocated(self) -> bool:
        return self.actor.num_gpus_for_infer == 0

    @property
    def use_reference(self) -> bool:
        return self.algorithm.kl_ctrl.kl_coef > 0 or self.algorithm.kl_ctrl.type == "adaptive"

    @property
    def actor_devices(self) -> int:
        return self.resource_pool.actor_rollout if self.colocated else self.actor.num_gpus_for_train

    @property
    def infer_devices(self) -> int:
        return self.resource_pool.actor_rollout if self.colocated else self.actor.num_gpus_for_infer

    @property
    def num_engines(self) -> int:
        return self.infer_devices // self.actor.infer_tensor_parallel_size

    def actor_dp(self) -> int:
        return self.actor_devices // (self.actor.tensor_model_parallel_size * self.actor.pipeline_model_parallel_size)

    def ref_dp(self) -> int:
        return self.resource_pool.ref // (self.ref.tensor_model_parallel_size * self.ref.pipeline_model_parallel_size)

    def check_sizes(self) -> None:
        """Batch and device sizes that do not fit together, named with their numbers."""
        t, a, pool, n = self.training, self.actor, self.resource_pool, self.actor.n_samples_per_prompt
        ar = "actor_rollout_ref.actor_rollout"
        if min(t.global_batch_size, a.ppo_mini_batch_size, a.micro_batch_size, a.ppo_epochs, t.train_iters) < 1:
            raise ConfigError("training.global_batch_size, train_iters and actor ppo_mini_batch_size, "
                              "micro_batch_size, ppo_epochs must be >= 1")
        if t.global_batch_size % a.ppo_mini_batch_size:
            raise ConfigError(f"{ar}.ppo_mini_batch_size {a.ppo_mini_batch_size} does not divide "
                              f"training.global_batch_size {t.global_batch_size} (prompts per step)")
        if not self.colocated and a.num_gpus_for_train + a.num_gpus_for_infer != pool.actor_rollout:
            raise ConfigError(f"{ar}.num_gpus_for_train {a.num_gpus_for_train} + num_gpus_for_infer "
                              f"{a.num_gpus_for_infer} != resource_pool.actor_rollout {pool.actor_rollout}")
        mp = a.tensor_model_parallel_size * a.pipeline_model_parallel_size
        if self.actor_devices < 1 or self.actor_devices % mp:
            raise ConfigError(f"actor devices {self.actor_devices} are not a multiple of {ar}.tensor_model_parallel_size "
                              f"{a.tensor_model_parallel_size} x pipeline_model_parallel_size {a.pipeline_model_parallel_size}")
        dp = self.actor_dp()
        per_mini = a.ppo_mini_batch_size * n
        if per_mini % (a.micro_batch_size * dp):
            raise ConfigError(f"a mini-batch of {a.ppo_mini_batch_size} prompts x {n} samples = {per_mini} completions "
                              f"does not split into micro_batch_size {a.micro_batch_size} x actor DP {dp}")
        if self.infer_devices % a.infer_tensor_parallel_size or self.num_engines < 1:
            raise ConfigError(f"inference devices {self.infer_devices} are not a positive multiple of "
                              f"{ar}.infer_tensor_parallel_size {a.infer_tensor_parallel_size}")
        if self.use_reference:
            self._check_ref_sizes(t.global_batch_size * n)
        if pool.reward < 1:
            raise ConfigError(f"resource_pool.reward is {pool.reward}; at least one reward worker is needed")

    def _check_ref_sizes(self, rollout_samples: int) -> None:
        r, pool = self.ref, self.resource_pool
        mp = r.tensor_model_parallel_size * r.pipeline_model_parallel_size
        if pool.ref < 1 or pool.ref % mp:
            raise ConfigError(f"resource_pool.ref {pool.ref} is not a positive multiple of ref tensor_model_parallel_size "
                              f"{r.tensor_model_parallel_size} x pipeline_model_parallel_size {r.pipeline_model_parallel_size} "
                              "(set algorithm.kl_ctrl.kl_coef: 0 to run without a reference)")
        if rollout_samples % (r.micro_batch_size * self.ref_dp()):
            raise ConfigError(f"the rollout batch of {rollout_samples} completions does not split into ref "
                              f"micro_batch_size {r.micro_batch_size} x ref DP {self.ref_dp()}")

"""The SFT config: the recipe's (Megatron-LM / MindSpeed-LLM) names for every field.

Loaded from YAML (``configs/sft/*.yaml``) with ``key=value`` overrides, or from MindSpeed-style
flags (``--micro-batch-size 4`` is ``micro_batch_size=4``; a bare ``--finetune`` is ``finetune=true``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mindr1.config import ConfigError, ranged
from mindr1.config.loader import checkpoint_retention

# MindSpeed-LLM / Megatron-LM flags accepted from existing scripts and ignored: each is either
# always on here or a kernel choice that megatron-core makes by itself.
IGNORED_FLAGS = {
    "use_mcore_models", "use_flash_attn", "use_fused_rmsnorm", "use_fused_swiglu", "use_fused_rotary_pos_emb",
    "use_rotary_position_embeddings", "swiglu", "disable_bias_linear", "untie_embeddings_and_output_weights",
    "sequence_parallel", "overlap_grad_reduce", "overlap_param_gather", "no_masked_softmax_fusion",
    "no_gradient_accumulation_fusion", "attention_softmax_in_fp32", "no_shuffle", "is_instruction_dataset",
    "variable_seq_lengths", "normalization", "position_embedding_type", "model_type", "tokenizer_type",
    "initial_loss_scale", "reuse_fp32_param", "distributed_backend", "no_create_attention_mask_in_dataloader",
    "tokenizer_name_or_path", "tokenizer_not_use_fast", "prompt_type", "num_workers", "use_cpu_initialization",
    # The model's shape comes from the checkpoint (or `model`); shape flags of existing scripts are ignored.
    "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "group_query_attention",
    "num_query_groups", "max_position_embeddings", "make_vocab_size_divisible_by", "padded_vocab_size",
    "rotary_base", "norm_epsilon", "add_qkv_bias", "fp16",
    # Flags of MindSpeed's stage-3 tune script that state what mindr1 always does: no dropout, every
    # sample trains (split 100,0,0), no eval iterations unless eval_data_path, throughput always logged,
    # this command is the SFT stage, weights come from `load` (init_method_std unused); checkpoints
    # always keep optimizer and RNG state, since a run must resume exactly.
    "attention_dropout", "hidden_dropout", "split", "eval_iters", "log_throughput", "stage", "init_method_std",
    "no_save_optim", "no_save_rng",
}


@dataclass
class SFTConfig:
    """Supervised fine-tuning (cold start, stage-3 SFT) of a Megatron checkpoint."""

    model: Optional[str] = None
    """Model description: a name under configs/model/, a YAML path or an HF dir; defaults to the one
    recorded in the loaded checkpoint."""
    load: Optional[str] = None
    """Megatron checkpoint to start from (tools/convert_ckpt.py output, or a previous run's save)."""
    save: Optional[str] = None
    """Directory to write checkpoints to; a run resumes from its latest checkpoint here."""
    finetune: bool = False
    """Start at iteration 0 with a fresh optimizer from ``load`` (the usual start from a converted model)."""
    no_load_optim: bool = False
    """Do not restore optimizer and LR-schedule state from ``load``."""
    no_load_rng: bool = False
    """Do not restore RNG state from ``load``."""
    data_path: str = ""
    """Preprocessed dataset prefix, or a blend: "3,PREFIX_A,1,PREFIX_B"."""
    dataset_category: Optional[str] = None
    """Category per blend part ("1,0"), carried per sample."""
    eval_data_path: Optional[str] = None
    """Held-out dataset prefix; its loss is reported every eval_interval and at the end."""
    eval_interval: int = ranged(0, ge=0)
    """Iterations between evaluations (0: only before training and at the end)."""
    eval_samples: int = ranged(64, ge=1)
    """Held-out samples per evaluation."""
    seq_length: int = ranged(2048, ge=1)
    """Longest sequence; longer samples are cut to it (preprocessing usually did this already)."""
    micro_batch_size: int = ranged(1, ge=1)
    """Samples per micro-batch per data-parallel rank."""
    global_batch_size: int = ranged(8, ge=1)
    """Samples per optimizer step, over all DP ranks and accumulation steps."""
    train_iters: int = ranged(10, ge=1)
    """Optimizer steps."""
    lr: float = ranged(1e-5, ge=0)
    """Peak learning rate."""
    min_lr: float = ranged(0.0, ge=0)
    """Learning rate at the end of the decay."""
    lr_decay_style: str = "cosine"
    """constant, linear or cosine decay after the warmup."""
    lr_warmup_fraction: Optional[float] = ranged(None, ge=0, lt=1)
    """Share of train_iters spent warming up linearly from 0 (overrides lr_warmup_iters)."""
    lr_warmup_iters: int = ranged(0, ge=0)
    """Warmup iterations when lr_warmup_fraction is not set."""
    lr_decay_iters: Optional[int] = ranged(None, ge=1)
    """Iterations over which the LR decays (default: train_iters)."""
    weight_decay: float = ranged(0.0, ge=0)
    """AdamW weight decay."""
    adam_beta1: float = ranged(0.9, ge=0, lt=1)
    """Adam beta1."""
    adam_beta2: float = ranged(0.95, ge=0, lt=1)
    """Adam beta2."""
    adam_eps: float = ranged(1e-8, gt=0)
    """Adam epsilon."""
    clip_grad: float = ranged(1.0, ge=0)
    """Gradient clipping by global norm (0 disables)."""
    tensor_model_parallel_size: int = ranged(1, ge=1)
    """TP degree."""
    pipeline_model_parallel_size: int = ranged(1, ge=1)
    """PP degree."""
    num_layer_list: Optional[str] = None
    """Uneven pipeline stages, e.g. "7,7,7,7" (megatron-core allows only the first/last to differ)."""
    use_distributed_optimizer: bool = True
    """Shard optimizer state over DP ranks (megatron DistributedOptimizer)."""
    bf16: Optional[bool] = None
    """bf16 parameters (default: true on GPU/NPU, false on CPU, where fp32 is used)."""
    seed: int = ranged(1234, ge=0)
    """Seed of weights not loaded, data order and dropout."""
    save_interval: int = ranged(0, ge=0)
    """Iterations between checkpoints (0: only at the end)."""
    keep_last_n: Optional[int] = ranged(None, ge=1)
    """Keep only the latest and the N newest iter_* checkpoints (older ones the trainer wrote are deleted;
    unset: keep all). Megatron-LM / HF users know it as save_total_limit."""
    save_total_limit: Optional[int] = ranged(None, ge=1)
    """Alias of keep_last_n."""
    keep_every_n: Optional[int] = ranged(None, ge=1)
    """With keep_last_n: also keep every iteration divisible by this (milestones)."""
    log_interval: int = ranged(1, ge=1)
    """Iterations between log lines."""
    tensorboard_dir: Optional[str] = None
    """TensorBoard directory (default: SAVE/tensorboard when save is set)."""
    wandb_project: Optional[str] = None
    """Weights & Biases project; logging to wandb only when set and wandb is installed."""
    peak_tflops: Optional[float] = ranged(None, gt=0)
    """Peak TFLOP/s per device for MFU (default: looked up for known GPUs; none on CPU)."""
    distributed_timeout_s: int = ranged(600, gt=0)
    """Timeout of every collective; a dead rank stops the run with an error, not a hang."""
    exit_after_iters: Optional[int] = ranged(None, ge=1)
    """Stop after this many iterations of this launch (tests of resume)."""

    def __post_init__(self):
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise ConfigError(f"micro_batch_size ({self.micro_batch_size}) and global_batch_size "
                              f"({self.global_batch_size}) must be >= 1")
        if self.lr_decay_style not in ("constant", "linear", "cosine", "inverse-square-root"):
            raise ConfigError(f"lr_decay_style: {self.lr_decay_style!r} is not constant, linear or cosine")
        if self.lr_warmup_fraction is not None and not 0 <= self.lr_warmup_fraction < 1:
            raise ConfigError(f"lr_warmup_fraction: {self.lr_warmup_fraction} is not in [0, 1)")
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr {self.min_lr} is above lr {self.lr}")
        self.keep_last_n = checkpoint_retention(self.keep_last_n, self.save_total_limit)

    def check_world(self, world_size: int) -> int:
        """The DP size for ``world_size``; errors name the numbers that do not divide."""
        mp = self.tensor_model_parallel_size * self.pipeline_model_parallel_size
        if world_size % mp:
            raise ConfigError(f"world size {world_size} is not divisible by TP*PP = {mp}")
        dp = world_size // mp
        if self.global_batch_size % (self.micro_batch_size * dp):
            raise ConfigError(f"global_batch_size {self.global_batch_size} is not divisible by "
                              f"micro_batch_size {self.micro_batch_size} x DP {dp}")
        return dp

    @property
    def warmup_iters(self) -> int:
        if self.lr_warmup_fraction is not None:
            return int(self.lr_warmup_fraction * self.train_iters)
        return self.lr_warmup_iters

    @property
    def layer_list(self) -> Optional[list[int]]:
        return [int(x) for x in self.num_layer_list.split(",")] if self.num_layer_list else None


def flags_to_overrides(argv: list[str]) -> tuple[Optional[str], list[str]]:
    """MindSpeed-style ``--flag value`` / ``--flag`` / ``key=value`` arguments -> (config path, overrides)."""
    config_path, overrides, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c"):
            config_path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--"):
            key, value = arg[2:], None
            if "=" in key:
                key, value = key.split("=", 1)
            key = key.replace("-", "_")
            if value is None and i + 1 < len(argv) and not argv[i + 1].startswith("--") and "=" not in argv[i + 1]:
                value, i = argv[i + 1], i + 1
            i += 1
            if key in IGNORED_FLAGS:
                continue
            overrides.append(f"{key}={'true' if value is None else value}")
            continue
        overrides.append(arg)
        i += 1
    return config_path, overrides

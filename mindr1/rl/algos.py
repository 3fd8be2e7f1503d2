"""GRPO math as pure tensor functions: advantages, policy loss, KL, aggregation, metrics.

Every function takes tensors (shape in the name suffix: `_B` per sequence, `_BT` per token,
`_BTV` per vocabulary entry) and returns tensors; nothing here reads a config object, calls a
collective or `.item()`, so the same code runs inside any worker and is tested on CPU alone.
Metrics come back as detached 0-dim tensors; the caller decides when to synchronise.

Rewards are laid out group by group: `rewards_B[g * group_size + j]` is sample j of prompt g,
which is how the rollout engine returns `n_samples_per_prompt` completions per prompt.

Advantage estimators, policy losses and rollout corrections are registered by name
(`algorithm.adv_estimator`, `actor_rollout_ref.actor_rollout.policy_loss`,
`algorithm.rollout_correction`), as verl's `register_adv_est` does; registering a name twice
raises, and the config asks these tables for the allowed names.

The module is longer than most on purpose: DESIGN.md keeps all RL math in this one pure file
(advantages, policy losses, rollout correction, KL, aggregation, mini-batching), each section small.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

Metrics = dict[str, torch.Tensor]

ADV_ESTIMATORS: dict[str, Callable] = {}
POLICY_LOSSES: dict[str, Callable] = {}
ROLLOUT_CORRECTIONS: dict[str, Callable] = {}
CORRECTION_LEVELS = ("token", "sequence")
AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")
KL_KINDS = ("k1", "k2", "k3", "low_var_kl")
KL_CTRL_TYPES = ("fixed", "adaptive")

# exp() of a log-ratio beyond this overflows float32 gradients; verl clamps at the same place.
_MAX_LOG_RATIO = 20.0
_MAX_K3 = 10.0


def _register(table: dict[str, Callable], kind: str, name: str) -> Callable:
    def decorator(fn: Callable) -> Callable:
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered (by {table[name].__name__})")
        table[name] = fn
        return fn

    return decorator


def _lookup(table: dict[str, Callable], kind: str, name: str) -> Callable:
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; registered: {sorted(table)}")
    return table[name]


def register_adv_est(name: str) -> Callable:
    """Decorator registering `fn(rewards_B, group_size, eps) -> (adv_B, metrics)` as `name`."""
    return _register(ADV_ESTIMATORS, "advantage estimator", name)


def get_adv_est(name: str) -> Callable:
    return _lookup(ADV_ESTIMATORS, "advantage estimator", name)


def register_policy_loss(name: str) -> Callable:
    """Decorator registering `fn(logp_BT, old_logp_BT, adv_BT, mask_BT, **kw) -> (loss, metrics)`."""
    return _register(POLICY_LOSSES, "policy loss", name)


def get_policy_loss(name: str) -> Callable:
    return _lookup(POLICY_LOSSES, "policy loss", name)


def register_rollout_correction(name: str) -> Callable:
    """Decorator registering `fn(ratio_BT, mask_BT, threshold) -> weights_BT` (see `rollout_correction_weights`)."""
    return _register(ROLLOUT_CORRECTIONS, "rollout correction", name)


def get_rollout_correction(name: str) -> Callable:
    return _lookup(ROLLOUT_CORRECTIONS, "rollout correction", name)


# ---------------------------------------------------------------- small helpers and metrics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """Sum of `x` over `mask` divided by `denom` (default: the number of masked-in entries)."""
    mask = mask.to(x.dtype)
    if denom is None:
        denom = mask.sum().clamp(min=1.0)
    return (x * mask).sum() / denom


def _grouped(x_B: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 1 or x_B.dim() != 1 or x_B.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(x_B.shape)} cannot be split into groups of {group_size}: "
            "expected a 1-D tensor whose length is a multiple of n_samples_per_prompt"
        )
    return x_B.reshape(-1, group_size)


def varied_groups(rewards_B: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """bool (G,): the groups whose rewards are not all equal (max - min > tol): the ones with a signal."""
    rewards_GN = _grouped(rewards_B, group_size)
    spread_G = rewards_GN.max(dim=1).values - rewards_GN.min(dim=1).values
    return spread_G > tol


def zero_variance_group_fraction(rewards_B: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """Share of groups whose rewards are all equal: they carry no GRPO signal."""
    return (~varied_groups(rewards_B, group_size, tol)).float().mean()


def entropy_from_logits(logits_BTV: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim, shape (B, T).

    -sum(p log p) from log_softmax rather than logsumexp(z) - sum(p z): the latter subtracts two
    numbers of the logits' magnitude and loses float32 precision when logits are large.
    """
    logp_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    return -(logp_BTV.exp() * logp_BTV).sum(dim=-1)


def clip_fraction(ratio_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor,
                  clip_low: float, clip_high: float) -> torch.Tensor:
    """Share of valid tokens whose gradient the clip removed (the clipped term was the max)."""
    adv_BT = adv_BT.expand_as(ratio_BT)
    clipped_BT = ((ratio_BT > 1.0 + clip_high) & (adv_BT > 0)) | ((ratio_BT < 1.0 - clip_low) & (adv_BT < 0))
    return masked_mean(clipped_BT.float(), mask_BT)


def approx_kl(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(old || new) over valid tokens, the usual PPO early-stopping signal."""
    return masked_mean(kl_penalty(old_logp_BT, logp_BT, "k3"), mask_BT)


# ---------------------------------------------------------------- advantages


def _group_advantage(rewards_B: torch.Tensor, group_size: int, eps: float, norm_by_std: bool):
    rewards_GN = _grouped(rewards_B.float(), group_size)
    if group_size < 2:
        raise ValueError("group advantages need n_samples_per_prompt >= 2 (got 1)")
    centred_GN = rewards_GN - rewards_GN.mean(dim=1, keepdim=True)
    if norm_by_std:
        # Unbiased std, as in the DeepSeekMath paper's implementation, verl and TRL.
        centred_GN = centred_GN / (rewards_GN.std(dim=1, keepdim=True) + eps)
    return centred_GN.reshape(-1), _reward_metrics(rewards_B, group_size)


def _reward_metrics(rewards_B: torch.Tensor, group_size: int) -> Metrics:
    return {"reward/mean": rewards_B.float().mean().detach(),
            "reward/zero_std_group_frac": zero_variance_group_fraction(rewards_B, group_size)}


@register_adv_est("group_norm")
def group_norm_advantage(rewards_B: torch.Tensor, group_size: int, eps: float = 1e-6):
    """GRPO: (r - mean_group) / (std_group + eps). Zero-variance groups get advantage 0."""
    return _group_advantage(rewards_B, group_size, eps, norm_by_std=True)


@register_adv_est("dr_grpo")
def dr_grpo_advantage(rewards_B: torch.Tensor, group_size: int, eps: float = 1e-6):
    """Dr.GRPO: r - mean_group, without the std division that up-weights easy/hard groups."""
    return _group_advantage(rewards_B, group_size, eps, norm_by_std=False)


@register_adv_est("rloo")
def rloo_advantage(rewards_B: torch.Tensor, group_size: int, eps: float = 1e-6):
    """RLOO: r_i - mean of the *other* rewards of its group = n / (n - 1) * (r_i - mean_group)."""
    rewards_GN = _grouped(rewards_B.float(), group_size)
    if group_size < 2:
        raise ValueError("RLOO needs n_samples_per_prompt >= 2 (got 1)")
    others_GN = (rewards_GN.sum(dim=1, keepdim=True) - rewards_GN) / (group_size - 1)
    return (rewards_GN - others_GN).reshape(-1), _reward_metrics(rewards_B, group_size)


def _batch_whiten(x_B: torch.Tensor, eps: float) -> torch.Tensor:
    if x_B.numel() < 2:
        return x_B - x_B.mean()
    return (x_B - x_B.mean()) / (x_B.std() + eps)


@register_adv_est("reinforce_plus_plus")
def reinforce_plus_plus_advantage(rewards_B: torch.Tensor, group_size: int, eps: float = 1e-6):
    """REINFORCE++ (outcome reward, gamma 1): the reward normalised over the whole batch,
    (r - mean_batch) / (std_batch + eps), no per-prompt baseline. verl whitens the per-token
    returns over all valid tokens (long responses weigh more); here every response weighs one."""
    _grouped(rewards_B, group_size)
    return _batch_whiten(rewards_B.float(), eps), _reward_metrics(rewards_B, group_size)


@register_adv_est("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline_advantage(rewards_B: torch.Tensor, group_size: int, eps: float = 1e-6):
    """REINFORCE++-baseline: subtract the group mean, then normalise over the whole batch."""
    rewards_GN = _grouped(rewards_B.float(), group_size)
    centred_B = (rewards_GN - rewards_GN.mean(dim=1, keepdim=True)).reshape(-1)
    return _batch_whiten(centred_B, eps), _reward_metrics(rewards_B, group_size)


def apply_missing_eos_penalty(rewards_B: torch.Tensor, finished_B: torch.Tensor, penalty: float) -> torch.Tensor:
    """Subtract `penalty` from the reward of every completion that did not end with EOS
    (`finished_B` False: truncated at max_tokens), as TRL's `missing_eos_penalty` does."""
    return rewards_B - penalty * (~finished_B.bool()).to(rewards_B.dtype)


def overlong_reward_penalty(response_len_B: torch.Tensor, max_response_length: int, buffer_length: int,
                            penalty_factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (<= 0, added to the reward): 0 up to
    `max_response_length - buffer_length` tokens, then falling linearly to `-penalty_factor`
    at `max_response_length` (verl `DAPORewardManager`: min(-exceed / buffer * factor, 0))."""
    if buffer_length < 1 or buffer_length > max_response_length:
        raise ValueError(f"overlong buffer {buffer_length} must be in [1, max_response_length {max_response_length}]")
    exceed_B = (response_len_B.float() - (max_response_length - buffer_length)).clamp(min=0.0)
    return -exceed_B / buffer_length * penalty_factor


# ---------------------------------------------------------------- aggregation


def aggregate_loss(loss_BT: torch.Tensor, mask_BT: torch.Tensor, mode: str = "token_mean",
                   num_valid_tokens: float | torch.Tensor | None = None,
                   num_sequences: float | torch.Tensor | None = None,
                   max_tokens: int | None = None) -> torch.Tensor:
    """Reduce a per-token loss to a scalar.

    token_mean: sum over valid tokens / `num_valid_tokens`. Pass the count over the whole
      global batch (all micro-batches, all DP ranks): each micro-batch then returns its share
      of the global mean, the shares add up to the same value whatever the micro-batching or
      DP size (sum the gradients, do not average them). None uses this batch's own count.
    seq_mean_token_mean: mean over each sequence's tokens, then sum / `num_sequences` (GRPO paper).
    seq_mean_token_sum: sum over each sequence's tokens, then sum / `num_sequences`.
    seq_mean_token_sum_norm: as above divided by the constant `max_tokens` (Dr.GRPO; default T).
    `num_sequences` follows the same global-count rule; None uses B.
    """
    mask_BT = mask_BT.to(loss_BT.dtype)
    if mode == "token_mean":
        return masked_mean(loss_BT, mask_BT, num_valid_tokens)
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {AGG_MODES}")
    seq_sum_B = (loss_BT * mask_BT).sum(dim=-1)
    if mode == "seq_mean_token_mean":
        seq_B = seq_sum_B / mask_BT.sum(dim=-1).clamp(min=1.0)
    elif mode == "seq_mean_token_sum":
        seq_B = seq_sum_B
    else:
        seq_B = seq_sum_B / float(max_tokens if max_tokens is not None else loss_BT.shape[-1])
    denom = num_sequences if num_sequences is not None else seq_B.shape[0]
    return seq_B.sum() / denom


# ---------------------------------------------------------------- policy loss and KL


@register_policy_loss("clip")
def clipped_policy_loss(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_BT: torch.Tensor,
                        mask_BT: torch.Tensor, *, clip_low: float = 0.2, clip_high: float | None = None,
                        clip_ratio_c: float | None = 3.0, weights_BT: torch.Tensor | None = None,
                        agg: str = "token_mean", num_valid_tokens=None, num_sequences=None,
                        max_tokens: int | None = None):
    """PPO/GRPO clipped surrogate: max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)).

    `clip_high` defaults to `clip_low` (symmetric `clip_ratio`); a larger one is DAPO's
    clip-higher. `adv_BT` may be (B, T) or (B, 1) (a sequence-level advantage broadcast).
    Dual-clip (Ye et al. 2020, verl's `clip_ratio_c`): for A < 0 the loss is capped at
    -A * clip_ratio_c, so a token whose ratio ran past the cap has a bounded loss and no
    gradient (None: off). `weights_BT` (rollout correction) multiplies the per-token loss.
    """
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio_BT = (logp_BT - old_logp_BT).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio_BT = torch.exp(log_ratio_BT)
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * ratio_BT.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_BT = torch.maximum(unclipped_BT, clipped_BT)
    dual_BT = torch.zeros_like(loss_BT, dtype=torch.bool)
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 (got {clip_ratio_c})")
        cap_BT = -adv_BT * clip_ratio_c
        dual_BT = (adv_BT < 0) & (loss_BT > cap_BT)
        loss_BT = torch.where(adv_BT < 0, torch.minimum(loss_BT, cap_BT), loss_BT)
    loss, metrics = _clipped_loss_and_metrics(loss_BT, ratio_BT, logp_BT, old_logp_BT, adv_BT, mask_BT, clip_low,
                                              clip_high, weights_BT, agg, num_valid_tokens, num_sequences, max_tokens)
    with torch.no_grad():
        metrics["actor/dual_clip_frac"] = masked_mean(dual_BT.float(), mask_BT)
    return loss, metrics


def _clipped_loss_and_metrics(loss_BT, ratio_BT, logp_BT, old_logp_BT, adv_BT, mask_BT, clip_low, clip_high,
                              weights_BT, agg, num_valid_tokens, num_sequences, max_tokens):
    """The tail every clipped policy loss shares: optional per-token weights (rollout correction), the
    aggregation, and the pg_loss / clip_frac / approx_kl metrics."""
    if weights_BT is not None:
        loss_BT = loss_BT * weights_BT
    loss = aggregate_loss(loss_BT, mask_BT, agg, num_valid_tokens, num_sequences, max_tokens)
    with torch.no_grad():
        metrics = {
            "actor/pg_loss": loss.detach(),
            "actor/clip_frac": clip_fraction(ratio_BT.detach(), adv_BT, mask_BT, clip_low, clip_high),
            "actor/approx_kl": approx_kl(logp_BT, old_logp_BT, mask_BT),
        }
    return loss, metrics


@register_policy_loss("gspo")
def gspo_policy_loss(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_BT: torch.Tensor,
                     mask_BT: torch.Tensor, *, clip_low: float = 3e-4, clip_high: float | None = None,
                     clip_ratio_c: float | None = None, weights_BT: torch.Tensor | None = None,
                     agg: str = "seq_mean_token_mean", num_valid_tokens=None, num_sequences=None,
                     max_tokens: int | None = None):
    """GSPO (Zheng et al. 2025): one importance ratio per sequence, the geometric mean of its token
    ratios s = exp(mean_t(logp - old)), clipped to [1 - clip_low, 1 + clip_high] (the paper: 3e-4,
    4e-4). Written GSPO-token style as verl does, s_t = sg[s] * p_t / sg[p_t]: the same value
    on every token of a sequence, and the gradient of the sequence-level objective. The paper
    averages per sequence (`agg` seq_mean_token_mean). Dual-clip does not apply (`clip_ratio_c`
    is ignored, as in verl); the log-ratio is clamped at 10 as verl does.
    """
    clip_high = clip_low if clip_high is None else clip_high
    mask_f_BT = mask_BT.to(logp_BT.dtype)
    seq_log_ratio_B = ((logp_BT - old_logp_BT) * mask_f_BT).sum(-1) / mask_f_BT.sum(-1).clamp(min=1.0)
    log_ratio_BT = (logp_BT - logp_BT.detach() + seq_log_ratio_B.detach().unsqueeze(-1)).clamp(max=10.0)
    ratio_BT = torch.exp(log_ratio_BT)
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * ratio_BT.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_BT = torch.maximum(unclipped_BT, clipped_BT)
    return _clipped_loss_and_metrics(loss_BT, ratio_BT, logp_BT, old_logp_BT, adv_BT, mask_BT, clip_low, clip_high,
                                     weights_BT, agg, num_valid_tokens, num_sequences, max_tokens)


def kl_penalty(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy (Schulman's k1/k2/k3).

    k1 = log(p/q); k2 = (log(p/q))^2 / 2; k3 = low_var_kl = q/p - log(q/p) - 1 (unbiased,
    non-negative, the GRPO paper's choice), with the log-ratio clamped at +-20 and k3 at 10.
    """
    log_ratio_BT = logp_BT - ref_logp_BT
    if kind == "k1":
        return log_ratio_BT
    if kind == "k2":
        return 0.5 * log_ratio_BT.square()
    if kind in ("k3", "low_var_kl"):
        neg_BT = (-log_ratio_BT).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        return (torch.exp(neg_BT) - neg_BT - 1.0).clamp(max=_MAX_K3)
    raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_KINDS}")


def kl_loss(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor, mask_BT: torch.Tensor, *, kind: str = "k3",
            agg: str = "token_mean", num_valid_tokens=None, num_sequences=None, max_tokens=None):
    """The KL-to-reference term of the GRPO loss (before multiplying by the KL coefficient)."""
    loss = aggregate_loss(kl_penalty(logp_BT, ref_logp_BT, kind), mask_BT, agg,
                          num_valid_tokens, num_sequences, max_tokens)
    return loss, {"actor/kl_loss": loss.detach()}


def grpo_loss(logp_BT, old_logp_BT, ref_logp_BT, adv_BT, mask_BT, *, policy_loss: str = "clip",
              clip_low: float = 0.2, clip_high: float | None = None, clip_ratio_c: float | None = 3.0,
              weights_BT: torch.Tensor | None = None, kl_coef: float = 0.0,
              kl_kind: str = "k3", entropy_BT: torch.Tensor | None = None, entropy_coef: float = 0.0,
              agg: str = "token_mean", num_valid_tokens=None, num_sequences=None, max_tokens=None):
    """policy loss + kl_coef * KL(policy || ref) - entropy_coef * entropy, one scalar + metrics.

    `ref_logp_BT` may be None when kl_coef == 0 (no reference model); `entropy_BT` (e.g. from
    `entropy_from_logits`) is needed only for a non-zero `entropy_coef` and is always logged.
    `weights_BT` (rollout correction) weighs the policy-loss term only, as verl does.
    """
    agg_kw = dict(agg=agg, num_valid_tokens=num_valid_tokens, num_sequences=num_sequences,
                  max_tokens=max_tokens)
    loss, metrics = get_policy_loss(policy_loss)(logp_BT, old_logp_BT, adv_BT, mask_BT,
                                                 clip_low=clip_low, clip_high=clip_high,
                                                 clip_ratio_c=clip_ratio_c, weights_BT=weights_BT, **agg_kw)
    if kl_coef:
        if ref_logp_BT is None:
            raise ValueError("kl_coef > 0 needs reference log-probs (ref_logp_BT is None)")
        kl, kl_metrics = kl_loss(logp_BT, ref_logp_BT, mask_BT, kind=kl_kind, **agg_kw)
        loss = loss + kl_coef * kl
        metrics.update(kl_metrics)
    if entropy_BT is not None:
        entropy = aggregate_loss(entropy_BT, mask_BT, agg, num_valid_tokens, num_sequences, max_tokens)
        loss = loss - entropy_coef * entropy
        metrics["actor/entropy"] = entropy.detach()
    elif entropy_coef:
        raise ValueError("entropy_coef != 0 needs entropy_BT")
    metrics["actor/loss"] = loss.detach()
    return loss, metrics


# ---------------------------------------------------------------- rollout-training mismatch


def logp_mismatch_metrics(logp_BT: torch.Tensor, rollout_logp_BT: torch.Tensor, mask_BT: torch.Tensor,
                          threshold: float, num_valid_tokens: float | torch.Tensor | None = None) -> Metrics:
    """|trainer log-prob - engine log-prob| of the sampled tokens: mean, max and share over `threshold`.

    Both sides must be the same quantity: the engines report raw log-probs (temperature 1, before
    top-k / top-p), so the trainer's side is taken at temperature 1 too. Mean and share are
    sums over `num_valid_tokens` (a global count passed in: micro-batch shares add up).
    """
    with torch.no_grad():
        mask_BT = mask_BT.to(logp_BT.dtype)
        gap_BT = (logp_BT.detach() - rollout_logp_BT).abs() * mask_BT
        return {"rollout/logp_abs_diff_mean": masked_mean(gap_BT, mask_BT, num_valid_tokens),
                "rollout/logp_abs_diff_max": gap_BT.max() if gap_BT.numel() else gap_BT.sum(),
                "rollout/logp_abs_diff_over_frac": masked_mean((gap_BT > threshold).to(mask_BT.dtype), mask_BT,
                                                               num_valid_tokens)}


@register_rollout_correction("none")
def no_correction(ratio_BT: torch.Tensor, mask_BT: torch.Tensor, threshold: float) -> torch.Tensor:
    """No correction: weight 1 on every valid token."""
    return mask_BT.to(ratio_BT.dtype)


@register_rollout_correction("tis")
def truncated_is(ratio_BT: torch.Tensor, mask_BT: torch.Tensor, threshold: float) -> torch.Tensor:
    """Truncated importance sampling (Yao et al. 2025): min(pi_trainer / pi_engine, C)."""
    return ratio_BT.clamp(max=threshold) * mask_BT.to(ratio_BT.dtype)


@register_rollout_correction("mis")
def masked_is(ratio_BT: torch.Tensor, mask_BT: torch.Tensor, threshold: float) -> torch.Tensor:
    """Masked importance sampling (Liu et al. 2025): the ratio where it is <= C, 0 (dropped) beyond."""
    return ratio_BT * (ratio_BT <= threshold).to(ratio_BT.dtype) * mask_BT.to(ratio_BT.dtype)


def rollout_correction_weights(old_logp_BT: torch.Tensor, rollout_logp_BT: torch.Tensor, mask_BT: torch.Tensor, *,
                               mode: str = "tis", level: str = "token", threshold: float = 2.0):
    """Importance weights correcting for the engine that sampled (behaviour) not being the trainer.

    ratio = pi_trainer(y) / pi_engine(y) from the trainer's pre-update log-probs and the engine's;
    level "token": per token; "sequence": the product over the sequence's tokens, broadcast to
    them. `mode` is a registered correction (`tis`: truncate at C = `threshold`; `mis`: mask
    beyond C). Returns (weights_BT, 0 on padding; metrics).
    """
    if level not in CORRECTION_LEVELS:
        raise ValueError(f"unknown rollout correction level {level!r}; expected one of {CORRECTION_LEVELS}")
    with torch.no_grad():
        mask_f_BT = mask_BT.to(old_logp_BT.dtype)
        log_ratio_BT = (old_logp_BT - rollout_logp_BT) * mask_f_BT
        if level == "sequence":
            log_ratio_BT = log_ratio_BT.sum(-1, keepdim=True).expand_as(log_ratio_BT)
        ratio_BT = torch.exp(log_ratio_BT.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO))
        weights_BT = get_rollout_correction(mode)(ratio_BT, mask_BT, threshold)
        metrics = {"rollout_correction/ratio_mean": masked_mean(ratio_BT, mask_f_BT),
                   "rollout_correction/weight_mean": masked_mean(weights_BT, mask_f_BT),
                   "rollout_correction/over_threshold_frac": masked_mean((ratio_BT > threshold).float(), mask_f_BT)}
    return weights_BT, metrics


# ---------------------------------------------------------------- KL coefficient control


class FixedKLController:
    """A constant KL coefficient (`algorithm.kl_ctrl.type: fixed`)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt; kept so the controller calls every kind the same way."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): move the coefficient so the measured KL tracks `target_kl`.

    value *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon. `n_steps` and `horizon`
    count responses (completions), as verl passes its batch size in responses. The coefficient is
    run state: it goes into the checkpoint through state_dict so a resumed run continues it.
    """

    def __init__(self, kl_coef: float, target_kl: float, horizon: int):
        super().__init__(kl_coef)
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(f"adaptive kl_ctrl needs target_kl > 0 and horizon > 0 (got {target_kl}, {horizon})")
        self.target_kl, self.horizon = float(target_kl), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def make_kl_controller(kind: str, kl_coef: float, target_kl: float | None = None,
                       horizon: int | None = None) -> FixedKLController:
    if kind == "fixed":
        return FixedKLController(kl_coef)
    if kind == "adaptive":
        return AdaptiveKLController(kl_coef, target_kl or 0.0, horizon or 0)
    raise ValueError(f"unknown kl_ctrl type {kind!r}; expected 'fixed' or 'adaptive'")


# ---------------------------------------------------------------- PPO epochs and mini-batches


def split_minibatches(batch_size: int, mini_batch_size: int, *, shuffle: bool = False, seed: int = 0,
                      epoch: int = 0) -> list[torch.Tensor]:
    """Index tensors of the mini-batches of one PPO epoch (`ppo_mini_batch_size`).

    Without shuffle: consecutive slices. With shuffle: a permutation drawn from a generator
    seeded with (seed, epoch), so a resumed run sees the same order on every rank.
    """
    if mini_batch_size < 1 or batch_size % mini_batch_size:
        raise ValueError(f"batch of {batch_size} samples does not split into mini-batches of "
                         f"{mini_batch_size} (ppo_mini_batch_size must divide it)")
    if shuffle:
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
        order = torch.randperm(batch_size, generator=gen)
    else:
        order = torch.arange(batch_size)
    return list(order.split(mini_batch_size))


def iter_ppo_minibatches(batch_size: int, mini_batch_size: int, ppo_epochs: int, *, shuffle: bool = False,
                         seed: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, indices) for every mini-batch of every one of `ppo_epochs` passes."""
    for epoch in range(ppo_epochs):
        for idx in split_minibatches(batch_size, mini_batch_size, shuffle=shuffle, seed=seed, epoch=epoch):
            yield epoch, idx

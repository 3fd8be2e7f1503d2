"""GRPO math against numbers worked out by hand in the comments next to each case."""
import math

import pytest
import torch

from mindr1.rl import algos

LN = math.log


def approx(x, **kw):
    return pytest.approx(x, rel=1e-5, abs=1e-6, **kw)


# ---------------------------------------------------------------- advantages


def test_group_norm_advantage_by_hand():
    # group 1: [1,0,0,0] mean .25, unbiased std sqrt((.75^2 + 3 * .25^2) / 3) = .5
    #   -> [.75, -.25, -.25, -.25] / .5 = [1.5, -.5, -.5, -.5]; group 2 all equal -> 0
    rewards_B = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv_B, metrics = algos.get_adv_est("group_norm")(rewards_B, group_size=4)
    assert adv_B.tolist() == approx([1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0])
    assert metrics["reward/zero_std_group_frac"].item() == 0.5
    assert metrics["reward/mean"].item() == approx(5 / 8)


def test_dr_grpo_advantage_is_centred_only():
    rewards_B = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 1.0])
    adv_B, _ = algos.get_adv_est("dr_grpo")(rewards_B, group_size=4)
    # means .25 and 1.0; no division by the std
    assert adv_B.tolist() == approx([0.75, -0.25, -0.25, -0.25, 1.0, -1.0, 0.0, 0.0])


def test_group_advantage_rejects_bad_groups():
    with pytest.raises(ValueError, match="groups of 3"):
        algos.group_norm_advantage(torch.zeros(8), group_size=3)
    with pytest.raises(ValueError, match=">= 2"):
        algos.group_norm_advantage(torch.zeros(4), group_size=1)


def test_zero_variance_group_fraction():
    rewards_B = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])  # groups of 2: equal, varied, equal
    assert algos.zero_variance_group_fraction(rewards_B, 2).item() == approx(2 / 3)


def test_missing_eos_penalty():
    out = algos.apply_missing_eos_penalty(torch.tensor([1.0, 0.5, 0.0]), torch.tensor([True, False, False]), 1.0)
    assert out.tolist() == approx([1.0, -0.5, -1.0])


# ---------------------------------------------------------------- policy loss and aggregation

# old_logp = 0 so ratio = exp(logp) = [[1.5, 0.9], [0.5, 1.1]]; adv (B, 1) = [[1], [-1]];
# the last token is padding. Per token, max(-A r, -A clip(r, .8, 1.2)):
#   (0,0) r=1.5 A=+1: max(-1.5, -1.2) = -1.2 (clipped)   (0,1) r=0.9: -0.9
#   (1,0) r=0.5 A=-1: max(0.5, 0.8) = 0.8 (clipped)       (1,1) padding
RATIO = torch.tensor([[1.5, 0.9], [0.5, 1.1]])
ADV = torch.tensor([[1.0], [-1.0]])
MASK = torch.tensor([[1, 1], [1, 0]])


def _loss(**kw):
    logp_BT = RATIO.log().requires_grad_(True)
    loss, metrics = algos.get_policy_loss("clip")(logp_BT, torch.zeros(2, 2), ADV, MASK, **kw)
    return logp_BT, loss, metrics


@pytest.mark.parametrize("kw, expected", [
    (dict(), (-1.2 - 0.9 + 0.8) / 3),                                       # token mean, local count
    (dict(num_valid_tokens=6), (-1.2 - 0.9 + 0.8) / 6),                     # global count passed in
    (dict(agg="seq_mean_token_mean"), ((-1.2 - 0.9) / 2 + 0.8 / 1) / 2),   # -0.125
    (dict(agg="seq_mean_token_sum"), ((-1.2 - 0.9) + 0.8) / 2),            # -0.65
    (dict(agg="seq_mean_token_sum_norm", max_tokens=4), ((-2.1 / 4) + 0.8 / 4) / 2),
    (dict(clip_high=0.28), (-1.28 - 0.9 + 0.8) / 3),                       # clip-higher
    (dict(clip_low=0.6, clip_high=0.2), (-1.2 - 0.9 + 0.5) / 3),           # (1,0) no longer clipped
    (dict(clip_low=0.6), (-1.5 - 0.9 + 0.5) / 3),                          # clip_high defaults to clip_low
])
def test_clipped_policy_loss_by_hand(kw, expected):
    _, loss, _ = _loss(**kw)
    assert loss.item() == approx(expected)


def test_clipped_policy_loss_gradient_and_metrics():
    logp_BT, loss, metrics = _loss()
    loss.backward()
    # d/dlogp of -A r is -A r; clipped and padded tokens get none: (0,1) -> -0.9 / 3
    assert logp_BT.grad.tolist() == [approx([0.0, -0.3]), approx([0.0, 0.0])]
    assert metrics["actor/clip_frac"].item() == approx(2 / 3)
    # k3(old || new) = r - ln r - 1 over the 3 valid tokens
    k3 = [r - LN(r) - 1 for r in (1.5, 0.9, 0.5)]
    assert metrics["actor/approx_kl"].item() == approx(sum(k3) / 3)


def test_token_mean_is_invariant_to_micro_batching():
    torch.manual_seed(0)
    logp_BT = torch.randn(6, 5, requires_grad=True)
    old_BT, adv_BT = torch.randn(6, 5), torch.randn(6, 1)
    mask_BT = (torch.rand(6, 5) > 0.3).long()
    n_tokens = mask_BT.sum()
    full, _ = algos.clipped_policy_loss(logp_BT, old_BT, adv_BT, mask_BT, num_valid_tokens=n_tokens)
    (full_grad,) = torch.autograd.grad(full, logp_BT)
    parts = [algos.clipped_policy_loss(logp_BT[s], old_BT[s], adv_BT[s], mask_BT[s], num_valid_tokens=n_tokens)[0]
             for s in (slice(0, 1), slice(1, 4), slice(4, 6))]
    (part_grad,) = torch.autograd.grad(sum(parts), logp_BT)
    assert sum(parts).item() == approx(full.item())
    assert torch.allclose(part_grad, full_grad, atol=1e-7)


def test_aggregate_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        algos.aggregate_loss(torch.zeros(1, 1), torch.ones(1, 1), "mean")


# ---------------------------------------------------------------- KL, entropy, total loss


def test_kl_estimators_by_hand():
    # p = .5, q = .25: log(p/q) = ln 2
    logp, ref = torch.tensor([[LN(0.5)]]), torch.tensor([[LN(0.25)]])
    assert algos.kl_penalty(logp, ref, "k1").item() == approx(LN(2))
    assert algos.kl_penalty(logp, ref, "k2").item() == approx(0.5 * LN(2) ** 2)
    assert algos.kl_penalty(logp, ref, "k3").item() == approx(0.5 - LN(0.5) - 1)  # q/p - ln(q/p) - 1
    assert algos.kl_penalty(logp, ref, "low_var_kl").item() == approx(0.5 + LN(2) - 1)
    assert algos.kl_penalty(torch.tensor([-30.0]), torch.tensor([0.0]), "k3").item() == 10.0  # clamped
    with pytest.raises(ValueError, match="unknown KL estimator"):
        algos.kl_penalty(logp, ref, "k4")


def test_entropy_from_logits_by_hand():
    logits_BTV = torch.tensor([[[0.0, 0.0], [0.0, LN(3.0)], [1000.0, 1000.0]]])
    # uniform over 2: ln 2; p = (.25, .75): -(.25 ln .25 + .75 ln .75); huge logits stay finite
    expected = [LN(2), -(0.25 * LN(0.25) + 0.75 * LN(0.75)), LN(2)]
    assert algos.entropy_from_logits(logits_BTV)[0].tolist() == approx(expected)


def test_grpo_loss_sums_its_terms():
    logp_BT = RATIO.log()
    ref_BT = torch.full((2, 2), LN(0.5))
    ent_BT = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    loss, metrics = algos.grpo_loss(logp_BT, torch.zeros(2, 2), ref_BT, ADV, MASK, kl_coef=0.1,
                                    entropy_BT=ent_BT, entropy_coef=0.01)
    pg = (-1.2 - 0.9 + 0.8) / 3
    kl = sum(0.5 / r - LN(0.5 / r) - 1 for r in (1.5, 0.9, 0.5)) / 3  # k3 with q/p = .5 / r
    ent = (1.0 + 2.0 + 3.0) / 3
    assert loss.item() == approx(pg + 0.1 * kl - 0.01 * ent)
    assert metrics["actor/kl_loss"].item() == approx(kl)
    assert metrics["actor/entropy"].item() == approx(ent)
    with pytest.raises(ValueError, match="reference"):
        algos.grpo_loss(logp_BT, torch.zeros(2, 2), None, ADV, MASK, kl_coef=0.1)


# ---------------------------------------------------------------- KL control, mini-batches, registries


def test_kl_controllers():
    fixed = algos.make_kl_controller("fixed", 0.04)
    fixed.update(10.0, 100)
    assert fixed.value == 0.04
    ctl = algos.make_kl_controller("adaptive", 0.1, target_kl=0.05, horizon=100)
    ctl.update(0.1, 10)  # error clipped to +.2 -> * (1 + .2 * 10 / 100)
    assert ctl.value == approx(0.102)
    ctl.update(0.04, 10)  # error -.2 -> * .98
    assert ctl.value == approx(0.102 * 0.98)
    resumed = algos.make_kl_controller("adaptive", 0.1, target_kl=0.05, horizon=100)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.value == ctl.value
    with pytest.raises(ValueError):
        algos.make_kl_controller("adaptive", 0.1)


def test_split_minibatches():
    assert [m.tolist() for m in algos.split_minibatches(6, 2)] == [[0, 1], [2, 3], [4, 5]]
    a = algos.split_minibatches(8, 4, shuffle=True, seed=3, epoch=0)
    assert [m.tolist() for m in a] == [m.tolist() for m in algos.split_minibatches(8, 4, shuffle=True, seed=3)]
    assert sorted(torch.cat(a).tolist()) == list(range(8))
    other = [torch.cat(algos.split_minibatches(8, 4, shuffle=True, seed=3, epoch=e)).tolist() for e in (1, 2, 3)]
    assert any(o != torch.cat(a).tolist() for o in other)
    with pytest.raises(ValueError, match="ppo_mini_batch_size"):
        algos.split_minibatches(5, 2)
    epochs = [e for e, _ in algos.iter_ppo_minibatches(6, 2, ppo_epochs=2, shuffle=True)]
    assert epochs == [0, 0, 0, 1, 1, 1]


def test_registries():
    assert algos.get_adv_est("group_norm") is algos.group_norm_advantage
    with pytest.raises(ValueError, match="already registered"):
        algos.register_adv_est("group_norm")(lambda *a: None)
    with pytest.raises(ValueError, match="already registered"):
        algos.register_policy_loss("clip")(lambda *a: None)
    with pytest.raises(KeyError, match="registered"):
        algos.get_policy_loss("nope")


# ---------------------------------------------------------------- dual-clip


def _dual(clip_ratio_c=3.0):
    # one row, A = -1: ratios 5 (past the cap), 2 (below it), 100 on a padding token
    logp_BT = torch.tensor([[5.0, 2.0, 100.0]]).log().requires_grad_(True)
    loss, metrics = algos.clipped_policy_loss(logp_BT, torch.zeros(1, 3), torch.tensor([[-1.0]]),
                                              torch.tensor([[1, 1, 0]]), clip_ratio_c=clip_ratio_c)
    loss.backward()
    return loss, logp_BT.grad, metrics


def test_dual_clip_caps_negative_advantage_loss_and_gradient():
    # A = -1, r = 5: max(5, 1.2) = 5, capped at -A * 3 = 3, no gradient; r = 2: loss 2, d/dlogp = -A r = 2
    loss, grad, metrics = _dual()
    assert loss.item() == approx((3.0 + 2.0) / 2)
    assert grad.tolist() == [approx([0.0, 2.0 / 2, 0.0])]
    assert metrics["actor/dual_clip_frac"].item() == approx(0.5)
    # without dual-clip the loss and gradient grow with the ratio
    loss, grad, _ = _dual(None)
    assert loss.item() == approx((5.0 + 2.0) / 2) and grad.tolist() == [approx([2.5, 1.0, 0.0])]
    with pytest.raises(ValueError, match="clip_ratio_c"):
        _dual(1.0)


def test_dual_clip_single_token_a_minus_one_ratio_five():
    logp_BT = torch.tensor([[LN(5.0)]], requires_grad=True)
    loss, _ = algos.get_policy_loss("clip")(logp_BT, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1))
    loss.backward()
    assert loss.item() == approx(3.0) and logp_BT.grad.item() == 0.0


def test_dual_clip_leaves_the_ppo_loss_bit_for_bit_below_the_cap():
    torch.manual_seed(1)
    logp_BT, old_BT = torch.randn(4, 6) * 0.3, torch.randn(4, 6) * 0.3
    adv_BT, mask_BT = torch.randn(4, 1), (torch.rand(4, 6) > 0.2).long()
    on, _ = algos.clipped_policy_loss(logp_BT, old_BT, adv_BT, mask_BT)
    off, _ = algos.clipped_policy_loss(logp_BT, old_BT, adv_BT, mask_BT, clip_ratio_c=None)
    assert torch.equal(on, off)


# ---------------------------------------------------------------- GSPO


def test_gspo_sequence_ratio_by_hand():
    # log-ratios: row 0 [.2, -.1, pad 5] -> mean .05, s = e^.05, A = +1 (inside [0.8, 1.2]): -s on each token;
    # row 1 [.5, .3, .1] -> mean .3, s = e^.3 = 1.3499, A = -1: max(s, 1.2) = s. seq_mean_token_mean.
    old_BT = torch.zeros(2, 3)
    logp_BT = torch.tensor([[0.2, -0.1, 5.0], [0.5, 0.3, 0.1]], requires_grad=True)
    adv, mask = torch.tensor([[1.0], [-1.0]]), torch.tensor([[1, 1, 0], [1, 1, 1]])
    s0, s1 = math.exp(0.05), math.exp(0.3)
    loss, metrics = algos.get_policy_loss("gspo")(logp_BT, old_BT, adv, mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == approx((-s0 + s1) / 2)
    loss.backward()
    # the gradient of the sequence objective -A exp(mean_t logp_t): -A s / L per token, / B
    assert logp_BT.grad.tolist() == [approx([-s0 / 2 / 2, -s0 / 2 / 2, 0.0]), approx([s1 / 3 / 2] * 3)]
    assert metrics["actor/clip_frac"].item() == 0.0  # row 1 is past 1.2 but with A < 0 the unclipped term wins
    # GSPO's own tiny clip range: row 0 (s = 1.05, A > 0) clipped at 1 + 4e-4, no gradient
    logp_BT.grad = None
    loss, metrics = algos.gspo_policy_loss(logp_BT, old_BT, adv, mask, clip_low=3e-4, clip_high=4e-4)
    assert loss.item() == approx((-(1 + 4e-4) + s1) / 2)
    assert metrics["actor/clip_frac"].item() == approx(2 / 5)
    loss.backward()
    assert logp_BT.grad[0].tolist() == approx([0.0, 0.0, 0.0])


# ---------------------------------------------------------------- RLOO, REINFORCE++


def test_rloo_advantage_by_hand():
    # group 1 [1,0,0,0]: r_i - mean(others) = [1 - 0, 0 - 1/3, ...]; group 2 all equal -> 0
    adv_B, metrics = algos.get_adv_est("rloo")(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 4)
    assert adv_B.tolist() == approx([1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0])
    assert metrics["reward/zero_std_group_frac"].item() == 0.5


def test_reinforce_plus_plus_by_hand():
    rewards_B = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    # batch mean 5/8, unbiased std sqrt((5 * .375^2 + 3 * .625^2) / 7): the all-equal group is not zero here
    std = math.sqrt((5 * 0.375 ** 2 + 3 * 0.625 ** 2) / 7)
    adv_B, _ = algos.get_adv_est("reinforce_plus_plus")(rewards_B, 4)
    assert adv_B.tolist() == approx([0.375 / std] + [-0.625 / std] * 3 + [0.375 / std] * 4)
    # baseline variant: group-centred [.75, -.25, -.25, -.25, 0, 0, 0, 0], then / batch std
    std = math.sqrt((0.75 ** 2 + 3 * 0.25 ** 2) / 7)
    adv_B, _ = algos.get_adv_est("reinforce_plus_plus_baseline")(rewards_B, 4)
    assert adv_B.tolist() == approx([0.75 / std] + [-0.25 / std] * 3 + [0.0] * 4)


# ---------------------------------------------------------------- DAPO reward shaping and group filter


def test_overlong_reward_penalty_by_hand():
    # max 10, buffer 4: free up to 6 tokens, then -1/4 per token, -1 at 10
    out = algos.overlong_reward_penalty(torch.tensor([5, 6, 7, 10]), 10, 4, penalty_factor=1.0)
    assert out.tolist() == approx([0.0, 0.0, -0.25, -1.0])
    assert algos.overlong_reward_penalty(torch.tensor([8]), 10, 4, 0.5).tolist() == approx([-0.25])
    with pytest.raises(ValueError, match="overlong buffer"):
        algos.overlong_reward_penalty(torch.tensor([1]), 10, 11)


def test_varied_groups():
    rewards_B = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    assert algos.varied_groups(rewards_B, 2).tolist() == [False, True, False]


# ---------------------------------------------------------------- rollout-training mismatch

# trainer (old) log-probs all -1; the engine's give ratios pi_trainer / pi_engine of
#   row 0: [1, 3, 0.5, pad]   row 1: [4, 1, pad, pad]; C = 2
OLD = torch.full((2, 4), -1.0)
ENGINE = OLD - torch.tensor([[0.0, LN(3), LN(0.5), 7.0], [LN(4), 0.0, -7.0, 7.0]])
CMASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


@pytest.mark.parametrize("mode, level, expected", [
    ("tis", "token", [[1, 2, 0.5, 0], [2, 1, 0, 0]]),
    ("mis", "token", [[1, 0, 0.5, 0], [0, 1, 0, 0]]),
    ("tis", "sequence", [[1.5, 1.5, 1.5, 0], [2, 2, 0, 0]]),      # products 1.5 and 4
    ("mis", "sequence", [[1.5, 1.5, 1.5, 0], [0, 0, 0, 0]]),
    ("none", "token", [[1, 1, 1, 0], [1, 1, 0, 0]]),
])
def test_rollout_correction_weights_by_hand(mode, level, expected):
    weights, metrics = algos.rollout_correction_weights(OLD, ENGINE, CMASK, mode=mode, level=level, threshold=2.0)
    assert weights.tolist() == [approx(row) for row in expected]
    if level == "token":
        assert metrics["rollout_correction/over_threshold_frac"].item() == approx(2 / 5)


def test_rollout_correction_with_exact_engine_is_the_uncorrected_loss():
    torch.manual_seed(2)
    logp_BT, old_BT = torch.randn(3, 5), torch.randn(3, 5)
    adv_BT, mask_BT = torch.randn(3, 1), (torch.rand(3, 5) > 0.3).long()
    plain, _ = algos.grpo_loss(logp_BT, old_BT, None, adv_BT, mask_BT)
    for mode in ("tis", "mis"):
        for level in algos.CORRECTION_LEVELS:
            w, _ = algos.rollout_correction_weights(old_BT, old_BT.clone(), mask_BT, mode=mode, level=level)
            corrected, _ = algos.grpo_loss(logp_BT, old_BT, None, adv_BT, mask_BT, weights_BT=w)
            assert torch.equal(corrected, plain), (mode, level)


def test_tis_weights_the_policy_loss():
    # on-policy ratio 1 and A = +1: per-token loss -w; token mean over the 5 valid tokens
    w, _ = algos.rollout_correction_weights(OLD, ENGINE, CMASK, mode="tis", threshold=2.0)
    loss, _ = algos.clipped_policy_loss(OLD, OLD, torch.ones(2, 1), CMASK, weights_BT=w)
    assert loss.item() == approx(-(1 + 2 + 0.5 + 2 + 1) / 5)


def test_logp_mismatch_metrics_by_hand():
    logp = torch.zeros(2, 3)
    engine = torch.tensor([[0.0, -0.5, -2.0], [0.1, 9.0, 9.0]])  # the 9s are padding
    m = algos.logp_mismatch_metrics(logp, engine, torch.tensor([[1, 1, 1], [1, 0, 0]]), threshold=1.0)
    assert m["rollout/logp_abs_diff_mean"].item() == approx(2.6 / 4)
    assert m["rollout/logp_abs_diff_max"].item() == approx(2.0)
    assert m["rollout/logp_abs_diff_over_frac"].item() == approx(1 / 4)
    # a global count passed in makes it a share that adds up over micro-batches
    m = algos.logp_mismatch_metrics(logp, engine, torch.tensor([[1, 1, 1], [1, 0, 0]]), 1.0, num_valid_tokens=8)
    assert m["rollout/logp_abs_diff_mean"].item() == approx(2.6 / 8)


def test_new_registries():
    assert algos.get_rollout_correction("tis") is algos.truncated_is
    assert {"rloo", "reinforce_plus_plus", "group_norm", "dr_grpo"} <= set(algos.ADV_ESTIMATORS)
    assert {"clip", "gspo"} <= set(algos.POLICY_LOSSES)
    with pytest.raises(ValueError, match="already registered"):
        algos.register_rollout_correction("mis")(lambda *a: None)
    with pytest.raises(KeyError, match="registered"):
        algos.rollout_correction_weights(OLD, ENGINE, CMASK, mode="nope")
    with pytest.raises(ValueError, match="level"):
        algos.rollout_correction_weights(OLD, ENGINE, CMASK, level="batch")

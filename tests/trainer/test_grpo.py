"""GRPO advantages and the policy loss against verl's own output and hand-computed numbers."""

import numpy as np
import pytest
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from itk_rl.trainer.grpo import (
    GlobalBatch,
    LossSettings,
    RolloutCorrection,
    grpo_advantages,
    policy_loss,
    rollout_correction,
)

REWARDS = np.array([1.0, 0.0, 1.0, 0.5, 0.7, 0.7, 0.7, 0.2, 0.9], dtype=np.float32)
GROUPS = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "c"])
LENGTHS = [3, 1, 2, 4, 2, 2, 1, 3, 4]


def mask_of(lengths: list[int]) -> torch.Tensor:
    mask = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return mask


def test_advantages_equal_hand_computed_and_verl():
    mask = mask_of(LENGTHS)
    out = grpo_advantages(REWARDS, GROUPS, response_mask=mask)
    # Group a: mean 0.625, unbiased std sqrt(0.6875 / 3); b: all equal; c: ±0.35 / std.
    std_a = np.sqrt(0.6875 / 3)
    std_c = np.std([0.2, 0.9], ddof=1)
    group_a = [0.375 / std_a, -0.625 / std_a, 0.375 / std_a, -0.125 / std_a]
    expected = np.array([*group_a, 0, 0, 0, -0.35 / std_c, 0.35 / std_c])
    np.testing.assert_allclose(out.advantages, expected, rtol=1e-4, atol=1e-5)
    # Same as verl called directly with the reward on the last token; zero on padding.
    token_rewards = torch.zeros_like(mask)
    token_rewards[torch.arange(len(LENGTHS)), torch.tensor(LENGTHS) - 1] = torch.tensor(REWARDS)
    verl_adv, _ = compute_grpo_outcome_advantage(token_rewards, mask, GROUPS)
    torch.testing.assert_close(out.token_advantages, verl_adv)
    assert torch.all(out.token_advantages[mask == 0] == 0)


def test_zero_variance_groups_are_counted_and_optionally_dropped():
    kept = grpo_advantages(REWARDS, GROUPS)
    assert (kept.num_groups, kept.num_zero_variance_groups) == (3, 1)
    assert kept.keep.all()
    assert kept.metrics["grpo/zero_variance_fraction"] == pytest.approx(1 / 3)
    skipped = grpo_advantages(REWARDS, GROUPS, skip_zero_variance_groups=True)
    assert skipped.keep.tolist() == [True] * 4 + [False] * 3 + [True] * 2
    dr_grpo = grpo_advantages(REWARDS, GROUPS, norm_by_std=False)
    np.testing.assert_allclose(dr_grpo.advantages[7:], [-0.35, 0.35], rtol=1e-5)


def test_advantages_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        grpo_advantages(REWARDS, GROUPS[:3])


def test_on_policy_gradient_is_minus_advantage_over_tokens():
    """At ratio 1 the clipped loss is −mean(A·ratio): d loss / d logprob = −A / num_tokens."""
    mask = mask_of([2, 3])
    logprobs = torch.full((2, 3), -1.0, requires_grad=True)
    advantages = torch.tensor([[1.0], [-2.0]]) * mask
    loss, metrics = policy_loss(
        logprobs, logprobs.detach(), advantages, mask, settings=LossSettings(kl_coef=0.0)
    )
    loss.backward()
    torch.testing.assert_close(logprobs.grad, -advantages / 5)
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/ppo_kl"] == 0.0
    assert metrics["actor/loss"] == pytest.approx((-2 + 6) / 5)


def test_token_importance_weights_are_truncated_ratios_and_scale_the_gradient():
    # Proximal (trainer) vs behaviour (rollout engine) log-probs of 2 responses, 3 and 2 tokens:
    # log-ratios 0.1, −0.2, 1.0 | 0.3, −0.5, (pad). Weights exp(0.1)=1.10517, exp(−0.2)=0.81873,
    # exp(1.0)=2.71828 truncated to 2.0 | exp(0.3)=1.34986, exp(−0.5)=0.60653, pad 0.
    mask = mask_of([3, 2])
    proximal = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -0.5, 0.0]])
    behaviour = torch.tensor([[-1.1, -1.8, -1.5], [-1.0, 0.0, -9.0]])
    correction = RolloutCorrection(is_level="token", is_threshold=2.0)
    weights, kept, metrics = rollout_correction(proximal, behaviour, mask, correction)
    expected = torch.tensor([[1.10517, 0.81873, 2.0], [1.34986, 0.60653, 0.0]])
    torch.testing.assert_close(weights, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(kept, mask)
    assert "rollout_corr/rollout_is_mean" in metrics
    # On-policy (ratio 1) the gradient is −A·w / num_tokens: each token's weight scales it.
    logprobs = proximal.clone().requires_grad_(True)
    advantages = torch.ones(2, 3) * mask
    loss, _ = policy_loss(
        logprobs,
        proximal,
        advantages,
        mask,
        rollout_is_weights=weights,
        settings=LossSettings(kl_coef=0.0),
    )
    loss.backward()
    torch.testing.assert_close(logprobs.grad, -expected / 5, atol=1e-6, rtol=0)


def test_sequence_weights_and_rejection_follow_verl():
    # Sequence level: one weight per response, exp(sum of its log-ratios): exp(0.1 − 0.2 + 1.0)
    # = exp(0.9) = 2.4596 truncated to 2.0, exp(0.3 − 0.5) = 0.81873. Rejection "token_k1"
    # with bounds 0.5_2.0 on the token ratio masks the one token whose ratio is e^1.0 = 2.718
    # (e^−0.5 = 0.607 stays): 1 of 5 tokens.
    mask = mask_of([3, 2])
    proximal = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -0.5, 0.0]])
    behaviour = torch.tensor([[-1.1, -1.8, -1.5], [-1.0, 0.0, -9.0]])
    sequence = RolloutCorrection(is_level="sequence", is_threshold=2.0)
    weights, _, _ = rollout_correction(proximal, behaviour, mask, sequence)
    torch.testing.assert_close(
        weights, torch.tensor([[2.0] * 3, [0.81873, 0.81873, 0.0]]), atol=1e-5, rtol=0
    )
    reject = RolloutCorrection(rs="token_k1", rs_threshold="0.5_2.0")
    weights, kept, metrics = rollout_correction(proximal, behaviour, mask, reject)
    assert weights is None
    torch.testing.assert_close(kept, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
    assert metrics["rollout_corr/rollout_rs_masked_fraction"] == pytest.approx(1 / 5)


def test_clipping_stops_the_gradient_beyond_the_clip_range():
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    logprobs = torch.tensor([[0.5, 0.05]], requires_grad=True)  # ratios e^0.5 (clipped), e^0.05
    loss, metrics = policy_loss(
        logprobs, old, torch.ones(1, 2), mask, settings=LossSettings(kl_coef=0.0)
    )
    loss.backward()
    assert logprobs.grad[0, 0] == 0 and logprobs.grad[0, 1] < 0
    assert metrics["actor/pg_clipfrac"] == pytest.approx(0.5)


def test_kl_term_is_zero_when_policy_equals_reference():
    mask = mask_of([2, 3])
    logprobs = torch.randn(2, 3).requires_grad_()
    advantages = torch.randn(2, 1) * mask
    settings = LossSettings(kl_coef=0.5)
    with_kl, metrics = policy_loss(
        logprobs, logprobs.detach(), advantages, mask, ref_logprobs=logprobs.detach(),
        settings=settings,
    )  # fmt: skip
    without, _ = policy_loss(
        logprobs, logprobs.detach(), advantages, mask, settings=LossSettings(kl_coef=0.0)
    )
    assert metrics["actor/kl"] == 0.0 and metrics["actor/kl_loss"] == 0.0
    torch.testing.assert_close(with_kl, without)
    moved, metrics = policy_loss(
        logprobs, logprobs.detach(), advantages, mask, ref_logprobs=logprobs.detach() - 0.3,
        settings=settings,
    )  # fmt: skip
    assert metrics["actor/kl"] > 0 and moved > without
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logprobs, logprobs.detach(), advantages, mask, settings=settings)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_rank_shares_sum_to_the_union_loss(mode):
    """With GlobalBatch, the ranks' losses averaged (what FSDP does to gradients) equal the
    loss of the union batch computed in one process."""
    torch.manual_seed(0)
    mask = mask_of([3, 1, 4, 2])
    logprobs, old = -torch.rand(4, 4), -torch.rand(4, 4)
    advantages, ref = torch.randn(4, 1) * mask, -torch.rand(4, 4)
    settings = LossSettings(loss_agg_mode=mode)
    union, _ = policy_loss(logprobs, old, advantages, mask, ref_logprobs=ref, settings=settings)
    whole = GlobalBatch(dp_size=2, num_tokens=int(mask.sum()), num_sequences=4)
    shares = [
        policy_loss(
            logprobs[rows], old[rows], advantages[rows], mask[rows], ref_logprobs=ref[rows],
            settings=settings, global_batch=whole,
        )[0]
        for rows in (slice(0, 1), slice(1, 4))
    ]  # fmt: skip
    torch.testing.assert_close((shares[0] + shares[1]) / 2, union)

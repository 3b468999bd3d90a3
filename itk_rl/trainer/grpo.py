"""GRPO math: group-normalised advantages and the clipped policy loss, both verl's own.

This module is glue only: the estimator is `compute_grpo_outcome_advantage`, the loss verl's
registered "vanilla" PPO-clip loss, aggregated with `agg_loss`, plus `kl_penalty` against a
frozen reference, and verl's rollout correction (truncated or masked importance weights
between the trainer's and the rollout engine's log-probs). What it adds is what verl leaves to
its trainer: putting each outcome reward
on the response's last token, counting (and optionally dropping) groups whose rewards are all
equal — they carry no learning signal, and after the first minutes of training they are most
groups (DESIGN §5) — and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from verl.trainer.ppo.core_algos import (
    agg_loss,
    compute_grpo_outcome_advantage,
    get_policy_loss_fn,
    kl_penalty,
)
from verl.trainer.ppo.rollout_corr_helper import (
    compute_rollout_correction_weights,
    compute_rollout_rejection_mask,
)
from verl.utils.torch_functional import masked_mean
from verl.workers.config import ActorConfig

# Metrics that are this micro-batch's share of the global loss (scaled by `dp_size` and the
# global token count, see `GlobalBatch`): summed over micro-batches and ranks, then divided by
# dp_size, they give the loss of the whole optimizer step. All other metrics are per-token means.
LOSS_METRICS = ("actor/loss", "actor/pg_loss", "actor/kl_loss")


@dataclass(frozen=True)
class GRPOAdvantages:
    """Advantages of N responses.

    token_advantages: `[N, response_len]`, the sample's advantage on each real token (verl's
        output). advantages: `[N]`, the same scalar per sample (what the trainer needs).
    keep: `[N]` bool, False for samples of zero-variance groups when skipping them.
    """

    token_advantages: torch.Tensor
    advantages: np.ndarray
    keep: np.ndarray
    num_groups: int
    num_zero_variance_groups: int

    @property
    def metrics(self) -> dict[str, float]:
        return {
            "grpo/groups": float(self.num_groups),
            "grpo/zero_variance_groups": float(self.num_zero_variance_groups),
            "grpo/zero_variance_fraction": self.num_zero_variance_groups / max(self.num_groups, 1),
            "grpo/advantage_abs_mean": float(np.abs(self.advantages).mean()),
        }


def grpo_advantages(
    rewards: np.ndarray | torch.Tensor,
    group_index: np.ndarray,
    *,
    response_mask: torch.Tensor | None = None,
    epsilon: float = 1e-6,
    norm_by_std: bool = True,
    skip_zero_variance_groups: bool = False,
) -> GRPOAdvantages:
    """Group-normalised advantages (r − mean_group) / (std_group + ε) by verl's estimator.

    rewards: `[N]` one outcome reward per response. group_index: `[N]`, responses to the same
    prompt share a value. response_mask: `[N, response_len]` (default: one token each); the
    reward sits on each response's last real token, as verl's reward managers put it.
    `norm_by_std=False` is Dr.GRPO (no division by the std). A group whose rewards are all
    equal gets zero advantages (a group of one gets verl's (r − 0) / 1: no baseline exists);
    both count as zero-variance, and `skip_zero_variance_groups` marks them not to be kept.
    """
    rewards = torch.as_tensor(np.asarray(rewards, dtype=np.float32))
    group_index = np.asarray(group_index)
    if rewards.ndim != 1 or group_index.shape != rewards.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and group_index {group_index.shape} must both be [N]"
        )
    if response_mask is None:
        response_mask = torch.ones((len(rewards), 1))
    response_mask = response_mask.float()
    lengths = response_mask.sum(dim=-1).long()
    if (lengths == 0).any():
        raise ValueError(f"responses {torch.nonzero(lengths == 0).flatten().tolist()} are empty")
    token_rewards = torch.zeros_like(response_mask)
    token_rewards[torch.arange(len(rewards)), lengths - 1] = rewards
    token_advantages, _ = compute_grpo_outcome_advantage(
        token_level_rewards=token_rewards,
        response_mask=response_mask,
        index=group_index,
        epsilon=epsilon,
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    flat = in_zero_variance_group(rewards.numpy(), group_index)
    keep = ~flat if skip_zero_variance_groups else np.ones(len(rewards), dtype=bool)
    return GRPOAdvantages(
        token_advantages=token_advantages,
        advantages=token_advantages[torch.arange(len(rewards)), lengths - 1].numpy(),
        keep=keep,
        num_groups=len(np.unique(group_index)),
        num_zero_variance_groups=len(np.unique(group_index[flat])),
    )


def in_zero_variance_group(rewards: np.ndarray, group_index: np.ndarray) -> np.ndarray:
    """`[N]` bool: the response's group has rewards all equal (a group of one included), so its
    advantages are zero and it carries no signal. Compared in float32, as the estimator sees
    them. rewards, group_index: `[N]`."""
    values = np.asarray(rewards, dtype=np.float32)
    groups, inverse = np.unique(np.asarray(group_index), return_inverse=True)
    flat = np.array([np.ptp(values[inverse == g]) == 0 for g in range(len(groups))], dtype=bool)
    return flat[inverse]


@dataclass(frozen=True)
class LossSettings:
    """The policy loss's knobs (verl's actor names in brackets).

    clip_ratio [clip_ratio]: PPO ε; `clip_ratio_low/high` override each side (DAPO's
    clip-higher); clip_ratio_c: dual-clip bound for negative advantages. kl_coef
    [kl_loss_coef]: weight of the KL to the reference, 0 turns it off; kl_type
    [kl_loss_type]: verl's estimator name ("low_var_kl" = k3, "kl" = k1, "mse" = k2, "k3+" …).
    entropy_coef: entropy bonus (0: logged only). loss_agg_mode: verl's `agg_loss` mode.
    """

    clip_ratio: float = 0.2
    clip_ratio_low: float | None = None
    clip_ratio_high: float | None = None
    clip_ratio_c: float = 3.0
    kl_coef: float = 1e-3
    kl_type: str = "low_var_kl"
    entropy_coef: float = 0.0
    loss_agg_mode: str = "token-mean"


@dataclass(frozen=True)
class RolloutCorrection:
    """Off-policy correction between the behaviour policy (the rollout engine's log-probs of
    the sampled tokens: older weights under `algorithm.max_staleness` ≥ 1, other kernels or
    dtype) and the proximal policy (the trainer's log-probs recomputed at the update's start,
    the PPO ratio's old policy): decoupled PPO. verl's names and semantics:

    is_level [rollout_is]: None (off), "token" or "sequence" importance weights
    π_proximal / π_behaviour on the policy-gradient loss. is_threshold
    [rollout_is_threshold]: a number truncates the weights there (TIS); "lower_upper" zeroes
    weights outside [lower, upper] (IcePop). rs [rollout_rs] / rs_threshold
    [rollout_rs_threshold]: rejection of tokens or sequences whose divergence estimate is out
    of bounds (e.g. "token_k1" with "0.5_2.0"); None: off.
    """

    is_level: str | None = None
    is_threshold: float | str = 2.0
    rs: str | None = None
    rs_threshold: float | str | None = None

    @property
    def enabled(self) -> bool:
        return self.is_level is not None or self.rs is not None


def rollout_correction(
    proximal_logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    correction: RolloutCorrection,
) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, float]]:
    """verl's importance weights and rejection mask from log π_proximal − log π_behaviour.

    All tensors `[batch, response_len]`. Returns the weights (None when `is_level` is off), the
    response mask with rejected tokens zeroed, and verl's metrics under `rollout_corr/`. Built
    on `verl.trainer.ppo.rollout_corr_helper.compute_rollout_correction_weights` and
    `compute_rollout_rejection_mask`.
    """
    log_ratio = (proximal_logprobs - rollout_logprobs) * response_mask
    weights, mask, metrics = None, response_mask, {}
    if correction.is_level is not None:
        weights, is_metrics = compute_rollout_correction_weights(
            log_ratio,
            response_mask,
            rollout_is=correction.is_level,
            rollout_is_threshold=correction.is_threshold,
        )
        metrics |= is_metrics
    if correction.rs is not None:
        mask, rs_metrics = compute_rollout_rejection_mask(
            log_ratio,
            response_mask,
            rollout_rs=correction.rs,
            rollout_rs_threshold=correction.rs_threshold,
        )
        metrics |= rs_metrics
    return weights, mask, {f"rollout_corr/{k}": float(v) for k, v in metrics.items()}


@dataclass(frozen=True)
class GlobalBatch:
    """What one micro-batch's loss is normalised by: the whole optimizer step on all ranks.

    With `num_tokens` the real response tokens of the step's mini-batch summed over ranks
    (`num_sequences` likewise, for the seq-mean modes), each micro-batch's loss is its share
    of the step's loss times `dp_size`; FSDP averages gradients over ranks, so accumulating
    micro-batches and ranks gives exactly the gradient of the whole mini-batch's mean loss.
    """

    dp_size: int = 1
    num_tokens: int | None = None
    num_sequences: int | None = None


def _actor_config(settings: LossSettings, global_batch: GlobalBatch) -> ActorConfig:
    """verl's loss functions read their knobs from an ActorConfig.

    strategy, rollout_n and the micro-batch size are required fields the loss never reads.
    """
    low = settings.clip_ratio_low if settings.clip_ratio_low is not None else settings.clip_ratio
    high = settings.clip_ratio_high if settings.clip_ratio_high is not None else settings.clip_ratio
    return ActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=settings.clip_ratio,
        clip_ratio_low=low,
        clip_ratio_high=high,
        clip_ratio_c=settings.clip_ratio_c,
        loss_agg_mode=settings.loss_agg_mode,
        global_batch_info=_agg_kwargs(global_batch),
    )


def _agg_kwargs(global_batch: GlobalBatch) -> dict:
    return {
        "dp_size": global_batch.dp_size,
        "batch_num_tokens": global_batch.num_tokens,
        "global_batch_size": global_batch.num_sequences,
    }


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    ref_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    rollout_is_weights: torch.Tensor | None = None,
    settings: LossSettings | None = None,
    global_batch: GlobalBatch | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip loss + kl_coef · KL(π‖π_ref) − entropy_coef · entropy, and its metrics.

    All tensors are `[batch, response_len]`: current log-probs (with grad), the behaviour
    policy's log-probs, token advantages, the 0/1 mask, the reference's log-probs (needed when
    kl_coef > 0), the per-token entropy (logged; in the loss when entropy_coef > 0) and the
    rollout-correction weights on the policy-gradient term (`rollout_correction`; None: off).
    Returns the scalar loss to backpropagate and float metrics (see `LOSS_METRICS`).
    """
    settings = settings or LossSettings()
    global_batch = global_batch or GlobalBatch()
    mask = response_mask.float()
    config = _actor_config(settings, global_batch)
    pg_loss, pg_metrics = get_policy_loss_fn("vanilla")(
        old_log_prob=old_logprobs,
        log_prob=logprobs,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=settings.loss_agg_mode,
        config=config,
        rollout_is_weights=rollout_is_weights,
    )
    agg = {"loss_agg_mode": settings.loss_agg_mode, **_agg_kwargs(global_batch)}
    loss = pg_loss
    metrics = {"actor/pg_loss": pg_loss.item(), **pg_metrics}
    if ref_logprobs is not None:
        kld = kl_penalty(logprobs, ref_logprobs, settings.kl_type)  # [batch, response_len]
        kl_loss = agg_loss(loss_mat=kld, loss_mask=mask, **agg)
        loss = loss + settings.kl_coef * kl_loss
        metrics["actor/kl_loss"] = kl_loss.item()
        metrics["actor/kl"] = masked_mean(kld.detach(), mask).item()
    elif settings.kl_coef > 0:
        raise ValueError(f"kl_coef={settings.kl_coef} needs ref_logprobs (or set kl_coef to 0)")
    if entropy is not None:
        if settings.entropy_coef:
            loss = loss - settings.entropy_coef * agg_loss(loss_mat=entropy, loss_mask=mask, **agg)
        metrics["actor/entropy"] = masked_mean(entropy.detach(), mask).item()
    metrics["actor/loss"] = loss.item()
    return loss, metrics

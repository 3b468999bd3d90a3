"""Paid calls: which components call a priced API, how many calls a run will make, and what
that may cost — said before any call is made, so a run is started knowingly (`--yes`).

A component is counted as paid when its config names an `api_key_env` (a hosted API needs a
key; a local `vllm serve` is configured without one). Generator calls depend on the plans, so
they are given as a range: one render per step at least, T_max per step at most with a critic.
Judge calls are counted per sample as the benchmark defines them, less those already cached.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROLES = ("generator", "planner", "critic", "judge")


def engine_node(cfg: Mapping[str, Any], role: str) -> Mapping[str, Any] | None:
    """The config node that talks to a model for `role` (an agent's or the judge's engine)."""
    node = cfg.get(role)
    if node is None:
        return None
    return node if role == "generator" else node.get("engine")


def paid_components(cfg: Mapping[str, Any]) -> dict[str, str]:
    """Role → a description ("OpenAIChatEngine gpt-4.1, key from $OPENAI_API_KEY") of each
    component that calls an API with a key."""
    found = {}
    for role in ROLES:
        node = engine_node(cfg, role)
        if node is not None and node.get("api_key_env"):
            target = str(node.get("_target_", "?")).rsplit(".", 1)[-1]
            found[role] = f"{target} {node.get('model', '')}, key from ${node['api_key_env']}"
    return found


@dataclass(frozen=True)
class CallEstimate:
    """Calls of each role as (fewest, most)."""

    calls: dict[str, tuple[int, int]]

    def cost(
        self, usd_per_call: Mapping[str, float | None], roles: set[str]
    ) -> tuple[float, float] | None:
        """(low, high) USD over `roles`, or None when a price is missing for one of them."""
        low = high = 0.0
        for role in roles:
            price = usd_per_call.get(role)
            if price is None:
                return None
            low += price * self.calls[role][0]
            high += price * self.calls[role][1]
        return low, high


def estimate(
    to_generate: int,
    judge_calls: int,
    *,
    has_planner: bool,
    has_critic: bool,
    max_attempts: int,
    accept_last_unreviewed: bool,
    steps_per_sample: float,
    unreadable_retries: int,
) -> CallEstimate:
    """The calls a run will make: `to_generate` samples still to generate (each planned into
    `steps_per_sample` steps when there is a planner) and `judge_calls` judge calls to ask."""
    steps = round(to_generate * (steps_per_sample if has_planner else 1))
    attempts = max_attempts if has_critic else 1
    reviews = max_attempts - 1 if accept_last_unreviewed else max_attempts
    return CallEstimate(
        {
            "generator": (steps, steps * attempts),
            "planner": (to_generate * has_planner,) * 2,
            "critic": (steps if has_critic else 0, steps * reviews if has_critic else 0),
            "judge": (judge_calls, judge_calls * (1 + unreadable_retries)),
        }
    )


def describe(
    estimate: CallEstimate,
    paid: Mapping[str, str],
    usd_per_call: Mapping[str, float | None],
) -> list[str]:
    """The lines printed before a run: every role's calls, the paid ones marked, the cost."""

    def span(low: int, high: int) -> str:
        return f"{low}" if low == high else f"{low} to {high}"

    lines = []
    for role in ROLES:
        low, high = estimate.calls[role]
        if high == 0:
            continue
        mark = f" — PAID: {paid[role]}" if role in paid else ""
        lines.append(f"{role} calls: {span(low, high)}{mark}")
    busy = {role for role in paid if estimate.calls[role][1] > 0}
    if busy:
        cost = estimate.cost(usd_per_call, busy)
        if cost is None:
            lines.append("estimated cost: unknown (set costs.usd_per_call.<role> in the recipe)")
        else:
            lines.append(f"estimated cost: ${cost[0]:.2f} to ${cost[1]:.2f} (costs.usd_per_call)")
    return lines


def missing_keys(cfg: Mapping[str, Any], estimate: CallEstimate) -> list[str]:
    """`$VARIABLE (role)` for each component that will be called but whose key variable is
    unset: the run stops before it starts rather than failing every call."""
    missing = []
    for role in ROLES:
        node = engine_node(cfg, role)
        variable = node.get("api_key_env") if node is not None else None
        if variable and estimate.calls[role][1] > 0 and not os.environ.get(variable):
            missing.append(f"${variable} ({role})")
    return missing


def needs_confirmation(estimate: CallEstimate, paid: Mapping[str, str]) -> bool:
    """Whether any paid component would be called at all."""
    return any(estimate.calls[role][1] > 0 for role in paid)

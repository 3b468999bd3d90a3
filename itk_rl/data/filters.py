"""The data filters of the paper, as pure functions on judge scores (DESIGN §1, "Data").

A step's *scores* are the overall judge scores O (0–10) of its attempts, in order (attempts
whose render failed have no image and no score, and are left out). Rules, applied in this
order, each step landing in exactly one bin:

1. **falling** (dropped): some attempt scores more than `fall_tolerance` below an *earlier*
   attempt — `max over i < j of (O_i − O_j) > fall_tolerance`. This covers "the last attempt
   is worse than the first" and any drop in between; the teacher's refinement made it worse,
   so the step teaches the critic nothing it should copy.
2. **low** (dropped): the score stays low — `max(O) < low_threshold` — nothing the teacher
   tried worked (often an earlier step went wrong and this one cannot be carried out).
3. **sft**: population variance of the scores `≤ var_low` (a step that went right at once,
   or where every attempt scored about the same) → Critic-SFT.
4. **rl**: variance `≥ var_high` (a large swing between attempts: a failure the teacher
   refined into a success) → Critic-RL, where the step-wise reward can see the difference.
5. **ambiguous** (dropped): variance strictly between `var_low` and `var_high`; neither side
   gets a step whose evidence is in between. Set `var_low == var_high` to drop none.

A critic record's label is the judge's: `success = O ≥ success_threshold`.

Balancing, then the ratio (`balance_labels`, `enforce_ratio`): each side's true/false labels
are balanced first (downsampling the majority, or upsampling the minority with replacement;
with `balance_labels_within`, separately among first attempts, second attempts, …),
then the larger side is subsampled, label by label, so that SFT:RL = `ratio`:1. All random
choices come from a seeded generator passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

FALLING, LOW, SFT, RL, AMBIGUOUS = "falling", "low", "sft", "rl", "ambiguous"
BINS = (FALLING, LOW, SFT, RL, AMBIGUOUS)
BALANCE_MODES = ("down", "up")


@dataclass(frozen=True)
class FilterConfig:
    """Every threshold of the filters (recipe `filters.*`); scores are on 0–10."""

    success_threshold: float = 10.0
    low_threshold: float = 5.0
    fall_tolerance: float = 0.5
    var_low: float = 1.0
    var_high: float = 4.0

    def __post_init__(self) -> None:
        if self.var_low > self.var_high:
            raise ValueError(
                f"filters.var_low ({self.var_low}) must be <= filters.var_high ({self.var_high})"
            )
        if self.fall_tolerance < 0:
            raise ValueError(f"filters.fall_tolerance must be >= 0, got {self.fall_tolerance}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_falling(scores: Sequence[float], tolerance: float) -> bool:
    """Whether some attempt scores more than `tolerance` below an earlier one (rule 1)."""
    best = float("-inf")
    for score in scores:
        if best - score > tolerance:
            return True
        best = max(best, score)
    return False


def is_low(scores: Sequence[float], threshold: float) -> bool:
    """Whether even the best attempt scores below `threshold` (rule 2)."""
    return max(scores) < threshold


def score_variance(scores: Sequence[float]) -> float:
    """Population variance (ddof 0) of the attempts' scores; 0 for a single attempt."""
    return float(np.var(np.asarray(scores, dtype=float)))


def classify_step(scores: Sequence[float], config: FilterConfig) -> str:
    """The bin of one step (rules in the module docstring); ValueError on no scores."""
    if not scores:
        raise ValueError("a step needs at least one scored attempt to be classified")
    if is_falling(scores, config.fall_tolerance):
        return FALLING
    if is_low(scores, config.low_threshold):
        return LOW
    variance = score_variance(scores)
    if variance <= config.var_low:
        return SFT
    if variance >= config.var_high:
        return RL
    return AMBIGUOUS


def is_success(overall: float, config: FilterConfig) -> bool:
    """The critic label of an attempt: the judge's overall score reaches the threshold."""
    return overall >= config.success_threshold


def _pick(indices: Sequence[int], size: int, rng: np.random.Generator, replace: bool) -> list[int]:
    if size == 0 or not indices:
        return []
    chosen = rng.choice(len(indices), size=size, replace=replace)
    return [indices[int(i)] for i in chosen]


def balance_labels(
    items: Sequence[T], labels: Sequence[bool], rng: np.random.Generator, mode: str = "down"
) -> tuple[list[T], list[bool]]:
    """Equal numbers of true and false labels.

    `down`: a random subset of the majority, as large as the minority (nothing is left when
    one label is absent). `up`: the minority drawn with replacement up to the majority's size
    (unchanged when one label is absent: there is nothing to draw). Items keep their order;
    upsampled copies follow their label's originals.
    """
    if mode not in BALANCE_MODES:
        raise ValueError(f"balance mode must be one of {BALANCE_MODES}, got {mode!r}")
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} items but {len(labels)} labels")
    yes = [i for i, label in enumerate(labels) if label]
    no = [i for i, label in enumerate(labels) if not label]
    if mode == "down":
        size = min(len(yes), len(no))
        keep = sorted(_pick(yes, size, rng, False) + _pick(no, size, rng, False))
    elif not yes or not no:
        keep = list(range(len(items)))
    else:
        size = max(len(yes), len(no))
        extra = [_pick(group, size - len(group), rng, True) for group in (yes, no)]
        keep = sorted(yes + no) + extra[0] + extra[1]
    return [items[i] for i in keep], [bool(labels[i]) for i in keep]


def balance_labels_within(
    items: Sequence[T],
    labels: Sequence[bool],
    groups: Sequence[int],
    rng: np.random.Generator,
    mode: str = "down",
) -> tuple[list[T], list[bool]]:
    """`balance_labels` inside each group (in ascending group order), the kept items in
    their original order (upsampled copies after all originals).

    The data build groups records by attempt: later attempts succeed far more often than first
    ones, so a label balanced only overall is predicted by whether the prompt was already
    rewritten, a cue a critic learns instead of looking at the image.
    """
    if len(groups) != len(items):
        raise ValueError(f"{len(items)} items but {len(groups)} groups")
    originals: list[int] = []
    copies: list[int] = []
    for group in sorted(set(groups)):
        members = [i for i, g in enumerate(groups) if g == group]
        kept, _ = balance_labels(members, [labels[i] for i in members], rng, mode)
        seen: set[int] = set()
        for index in kept:
            (copies if index in seen else originals).append(index)
            seen.add(index)
    keep = sorted(originals) + copies
    return [items[i] for i in keep], [bool(labels[i]) for i in keep]


def subsample_stratified(
    items: Sequence[T], labels: Sequence[bool], size: int, rng: np.random.Generator
) -> tuple[list[T], list[bool]]:
    """`size` items drawn without replacement, keeping the true/false shares (true rounded
    down); the order of the kept items is preserved."""
    if size >= len(items):
        return list(items), [bool(label) for label in labels]
    yes = [i for i, label in enumerate(labels) if label]
    no = [i for i, label in enumerate(labels) if not label]
    num_yes = size * len(yes) // len(items)
    keep = sorted(_pick(yes, num_yes, rng, False) + _pick(no, size - num_yes, rng, False))
    return [items[i] for i in keep], [bool(labels[i]) for i in keep]


def enforce_ratio(
    sft: Sequence[T],
    sft_labels: Sequence[bool],
    rl: Sequence[T],
    rl_labels: Sequence[bool],
    ratio: float,
    rng: np.random.Generator,
) -> tuple[tuple[list[T], list[bool]], tuple[list[T], list[bool]]]:
    """Subsample the larger side so that `len(sft) == round(ratio * len(rl))`.

    With `n_rl = min(len(rl), floor(len(sft) / ratio))` RL records and `round(ratio · n_rl)`
    SFT records, the ratio is exact for an integer `ratio` (2 in the paper); each side keeps
    its label shares (`subsample_stratified`).
    """
    if ratio <= 0:
        raise ValueError(f"splits.sft_to_rl_ratio must be > 0, got {ratio}")
    num_rl = min(len(rl), int(np.floor(len(sft) / ratio + 1e-9)))
    num_sft = min(len(sft), round(ratio * num_rl))
    return (
        subsample_stratified(sft, sft_labels, num_sft, rng),
        subsample_stratified(rl, rl_labels, num_rl, rng),
    )

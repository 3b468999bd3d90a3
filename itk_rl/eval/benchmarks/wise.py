"""WISE (github.com/PKU-YuanGroup/WISE): world-knowledge text-to-image, 1000 prompts, two
protocols.

Legacy: the judge gives Consistency, Realism and Aesthetic Quality on 0–2 and a sample's WiScore
is (0.7·C + 0.2·R + 0.1·A) / 2. Verified (the default since 2026-04): the judge gives one binary
score. The protocols split the ids into categories differently (about 200 prompts changed), so
each protocol carries its own range table and weights, and a record whose `Category` disagrees
with the chosen table is an error (legacy files scored with verified ranges would corrupt five
categories). A category is the mean of its scored samples; the overall is a weighted sum of the
six categories, given only when every id 1–1000 has a score, as the official script does. An
unreadable answer (after retries) leaves its sample out; so does a missing image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from itk_rl.eval.benchmarks.common import (
    BenchmarkFormatError,
    field,
    read_rows,
    strip_think,
)

SOURCE = "https://github.com/PKU-YuanGroup/WISE"
NUM_PROMPTS = 1000


class Protocol(str, Enum):
    LEGACY = "legacy"
    VERIFIED = "verified"


CATEGORIES = ("culture", "time", "space", "biology", "physics", "chemistry")
# Inclusive prompt_id ranges of each category, per protocol (the official scoring scripts).
RANGES: dict[Protocol, dict[str, tuple[int, int]]] = {
    Protocol.LEGACY: {
        "culture": (1, 400),
        "time": (401, 567),
        "space": (568, 700),
        "biology": (701, 800),
        "physics": (801, 900),
        "chemistry": (901, 1000),
    },
    Protocol.VERIFIED: {
        "culture": (1, 400),
        "time": (401, 520),
        "space": (521, 640),
        "biology": (641, 760),
        "physics": (761, 880),
        "chemistry": (881, 1000),
    },
}
WEIGHTS: dict[Protocol, dict[str, float]] = {
    Protocol.LEGACY: dict(zip(CATEGORIES, (0.4, 0.167, 0.133, 0.1, 0.1, 0.1), strict=True)),
    Protocol.VERIFIED: dict(zip(CATEGORIES, (0.4, 0.12, 0.12, 0.12, 0.12, 0.12), strict=True)),
}
# The official files' `Category` values → our category names.
_CATEGORY_NAMES = {
    "cultural knowledge": "culture",
    "time": "time",
    "space": "space",
    "biology": "biology",
    "physical knowledge": "physics",
    "chemistry": "chemistry",
}
# The official data files of each protocol, relative to a WISE checkout.
DATA_FILES: dict[Protocol, tuple[str, ...]] = {
    Protocol.LEGACY: tuple(
        f"WISE_legacy/data/{name}.json"
        for name in ("cultural_common_sense", "spatio-temporal_reasoning", "natural_science")
    ),
    Protocol.VERIFIED: tuple(
        f"data_verified/{name}_verified.json"
        for name in ("cultural_common_sense", "spatio-temporal_reasoning", "natural_science")
    ),
}
VERIFIED_MERGED = "data_verified/merge.json"


@dataclass(frozen=True)
class WisePrompt:
    prompt_id: int
    prompt: str
    explanation: str
    category: str
    """Our category name (culture, time, space, biology, physics, chemistry)."""
    subcategory: str


def category_of(prompt_id: int, protocol: Protocol) -> str:
    """The category `prompt_id` belongs to under `protocol`'s range table."""
    for name, (low, high) in RANGES[Protocol(protocol)].items():
        if low <= prompt_id <= high:
            return name
    raise ValueError(f"WISE prompt_id {prompt_id} is outside 1–{NUM_PROMPTS}")


def data_files(root: Path, protocol: Protocol) -> list[Path]:
    """The official files under a WISE checkout `root` (verified: merge.json when present)."""
    root = Path(root)
    if Protocol(protocol) is Protocol.VERIFIED and (root / VERIFIED_MERGED).is_file():
        return [root / VERIFIED_MERGED]
    return [root / name for name in DATA_FILES[Protocol(protocol)]]


def load_prompts(paths: Path | Sequence[Path], protocol: Protocol) -> tuple[WisePrompt, ...]:
    """The prompts of the official JSON files `paths` (a WISE checkout folder picks its files).

    Each record's `Category` must agree with `protocol`'s range table and ids must be unique.
    """
    protocol = Protocol(protocol)
    if isinstance(paths, (str, Path)) and Path(paths).is_dir():
        paths = data_files(Path(paths), protocol)
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    prompts: dict[int, WisePrompt] = {}
    for path in files:
        what = f"the WISE {protocol.value} prompt file {path.name}"
        for index, row in enumerate(read_rows(path, what, SOURCE)):
            prompt = _prompt(row, path, index, protocol)
            if prompt.prompt_id in prompts:
                raise BenchmarkFormatError(path, index, "prompt_id", f"{prompt.prompt_id} repeats")
            prompts[prompt.prompt_id] = prompt
    return tuple(prompts[key] for key in sorted(prompts))


def _prompt(row: dict[str, Any], path: Path, index: int, protocol: Protocol) -> WisePrompt:
    prompt_id = field(row, "prompt_id", int, path, index)
    if not 1 <= prompt_id <= NUM_PROMPTS:
        raise BenchmarkFormatError(path, index, "prompt_id", f"{prompt_id} not in 1–{NUM_PROMPTS}")
    raw = field(row, "Category", str, path, index)
    category = _CATEGORY_NAMES.get(raw.strip().lower())
    if category is None:
        raise BenchmarkFormatError(path, index, "Category", f"{raw!r} is not a WISE category")
    expected = category_of(prompt_id, protocol)
    if category != expected:
        other = next(p for p in Protocol if p is not protocol).value
        raise BenchmarkFormatError(
            path,
            index,
            "Category",
            f"{raw!r} disagrees with the {protocol.value} range table (prompt_id {prompt_id} "
            f"is {expected} there): is this a {other} file?",
        )
    return WisePrompt(
        prompt_id=prompt_id,
        prompt=field(row, "Prompt", str, path, index),
        explanation=field(row, "Explanation", str, path, index),
        category=category,
        subcategory=field(row, "Subcategory", str, path, index),
    )


def image_path(folder: Path, prompt_id: int) -> Path:
    """Where the official layout puts the image of `prompt_id`: `{prompt_id}.png`."""
    return Path(folder) / f"{prompt_id}.png"


# --- judge answers -----------------------------------------------------------------------------

_LEGACY_KEY = re.compile(r"(consistency|realism|aesthetic\s+quality)[\s*:：]*(\d+)", re.IGNORECASE)
_BARE_0_2 = re.compile(r"^\s*([0-2])\s*$", re.MULTILINE)
_VERIFIED_KEY = re.compile(r"score[\s*:：]*([01])\b", re.IGNORECASE)
_BARE_0_1 = re.compile(r"^\s*([01])\s*$", re.MULTILINE)


@dataclass(frozen=True)
class LegacyScores:
    consistency: int
    realism: int
    aesthetic_quality: int

    @property
    def wiscore(self) -> float:
        """(0.7·consistency + 0.2·realism + 0.1·aesthetic) / 2, in [0, 1]."""
        return (0.7 * self.consistency + 0.2 * self.realism + 0.1 * self.aesthetic_quality) / 2


def parse_legacy_answer(text: str) -> LegacyScores | None:
    """The three 0–2 scores of a legacy judge answer, or None when it is unreadable.

    Named lines ("**Consistency:** 2", any case) are read first, the last of each name winning;
    only when no name appears are three bare lines of 0–2 read in order. A value outside 0–2 or
    a missing name makes the answer unreadable (the official script reads one digit and would
    take "10" for 1).
    """
    text = strip_think(text)
    named = {key.lower().split()[0]: int(value) for key, value in _LEGACY_KEY.findall(text)}
    if named:
        values = [named.get(k) for k in ("consistency", "realism", "aesthetic")]
    else:
        values = [int(v) for v in _BARE_0_2.findall(text)[:3]]
    if len(values) != 3 or any(v is None or not 0 <= v <= 2 for v in values):
        return None
    return LegacyScores(*values)


def parse_verified_answer(text: str) -> int | None:
    """The binary score of a verified judge answer ("Score: 0|1", else a bare 0/1 line)."""
    text = strip_think(text)
    match = _VERIFIED_KEY.search(text) or _BARE_0_1.search(text)
    return int(match.group(1)) if match else None


# --- aggregation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WiseResult:
    protocol: str
    categories: dict[str, float | None]
    """Mean WiScore of each category's scored samples; None when it has none."""
    counts: dict[str, int]
    overall: float | None
    """Weighted sum of the categories; None unless every id 1–1000 was scored."""
    missing_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_wise(scores: Mapping[int, float | None], protocol: Protocol) -> WiseResult:
    """Aggregate per-sample WiScores (legacy: `LegacyScores.wiscore`; verified: the 0/1 score).

    An id absent from `scores` or mapped to None (unreadable, no image) is left out of its
    category and prevents the overall.
    """
    protocol = Protocol(protocol)
    per_category: dict[str, list[float]] = {name: [] for name in CATEGORIES}
    for prompt_id, score in scores.items():
        if score is not None:
            per_category[category_of(prompt_id, protocol)].append(float(score))
    means = {k: (sum(v) / len(v) if v else None) for k, v in per_category.items()}
    scored = {k for k, v in scores.items() if v is not None}
    missing = tuple(i for i in range(1, NUM_PROMPTS + 1) if i not in scored)
    overall = None
    if not missing:
        overall = sum(WEIGHTS[protocol][k] * means[k] for k in CATEGORIES)  # type: ignore[operator]
    return WiseResult(
        protocol=protocol.value,
        categories=means,
        counts={k: len(v) for k, v in per_category.items()},
        overall=overall,
        missing_ids=missing,
    )

"""The main job over several seeds: each seed's run (resumable) and the figures across seeds.

One run of the main job (`itk_rl.demo`) has intervals over held-out tasks only. Trained again
with another seed, or on another machine whose kernels round differently, the difference
between its critics can move by more than those intervals (GRPO − SFT +0.63 and −0.10 per step
on two machines, issue 23), so one run cannot show that training helps. A `Study`
runs the job once per seed (the seed of the tiny weights, of training and of sampling) on the
same held-out tasks (`evaluation.task_seed`, and the same render seeds), and `summarise_seeds`
gives every figure across seeds with an interval that holds both sources of variance.

The data build is shared: every seed trains on one build (`data_dir` = OUT/data, built with
`data_seed` by the first seed that runs). The question is what training does with a given data
set, so the variance measured is training's (weights, data order, rollouts); a build of 24000
prompts also costs several minutes per seed. Varying the data too would need a build per seed.

Intervals: a two-level bootstrap over a crossed design (every seed is evaluated on the same
tasks). Each replicate draws the seeds with replacement and one resample of the tasks, applies
that task resample to every drawn seed, and averages the seeds' ratios; a paired difference
(GRPO − SFT, …) takes both systems on the same drawn seeds and the same resampled tasks. One
task resample per replicate, not one per seed: the tasks are shared, so a hard task is hard for
every seed, and resampling each seed's tasks apart would divide the task variance by the number
of seeds. With few seeds the seed level is crude (3 seeds: 3 values to draw from, which
understates their spread by a factor (S − 1)/S in variance), so the seeds' own standard
deviation is reported too; with one seed the interval is that seed's task bootstrap.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from itk_rl.eval.metrics import (
    AttemptOutcome,
    Estimate,
    StepOutcome,
    TaskOutcome,
    bootstrap_ratio,
    metric_arrays,
    task_resamples,
)
from itk_rl.formats.files import write_atomic
from itk_rl.job import compose_recipe

HEADLINE = ("final_score", "scene_accuracy", "verdict_accuracy")
"""The figures reported across seeds: score per step, right-scene rate, verdict accuracy."""
EVAL_JSON = Path("report") / "eval.json"
"""Where the main job's evaluation (`EvalResult.to_dict`) lies in its output folder."""
Arrays = tuple[np.ndarray, np.ndarray]
"""A metric's numerator and denominator per task ([tasks] each, `metric_arrays`)."""
Outcomes = Mapping[str, Sequence[TaskOutcome]]
"""One seed's evaluation: each system's task outcomes, the same tasks in the same order."""


# --- running the job per seed ------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """The main job over several seeds, in `out`/seed_<seed>/, sharing the data build in
    `out`/data (built with `data_seed`). `overrides` apply to `recipes/demo.yaml`; the stage
    overrides are appended to that stage's list (`stages.<stage>.overrides`)."""

    out: Path
    data_seed: int
    overrides: tuple[str, ...] = ()
    sft_overrides: tuple[str, ...] = ()
    grpo_overrides: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Study:
        """The study `add_study_arguments`' flags describe."""
        data_seed = args.seeds[0] if args.data_seed is None else args.data_seed
        return cls(
            Path(args.out),
            data_seed,
            tuple(args.overrides),
            tuple(args.sft_overrides),
            tuple(args.grpo_overrides),
        )

    def seed_dir(self, seed: int) -> Path:
        return self.out.resolve() / f"seed_{seed}"

    def config(self, seed: int) -> DictConfig:
        """The demo recipe of `seed`'s run."""
        cfg = compose_recipe(
            "demo",
            [
                f"output_dir={self.seed_dir(seed)}",
                f"seed={seed}",
                f"data_seed={self.data_seed}",
                f"data_dir={self.out.resolve() / 'data'}",
                *self.overrides,
            ],
        )
        cfg.stages.sft.overrides.extend(self.sft_overrides)
        cfg.stages.grpo.overrides.extend(self.grpo_overrides)
        return cfg

    def record_settings(self) -> None:
        """Write `out`/settings.json, or check that this run asks for the settings recorded
        there: finished seeds are reused, not rerun, so a study must not mix settings."""
        settings = {k: v for k, v in asdict(self).items() if k != "out"}
        settings = json.loads(json.dumps(settings))  # tuples as lists, as they are read back
        path = self.out / "settings.json"
        if not path.is_file():
            write_atomic(path, json.dumps(settings, indent=1))
            return
        recorded = json.loads(path.read_text())
        if recorded != settings:
            raise ValueError(
                f"{path} records the settings {recorded}, this run asks for {settings}: its "
                "finished seeds would be mixed with others; use another output folder or the "
                "same settings"
            )

    def run_seed(self, seed: int, runner: Callable[[DictConfig], object] | None = None) -> bool:
        """Run the main job for `seed` unless it finished (its figures.json, written last, is
        there; an unfinished one resumes its stages). `runner` runs the composed demo recipe
        (default `itk_rl.demo.run`). Returns whether it ran."""
        if (self.seed_dir(seed) / "figures.json").is_file():
            return False
        if runner is None:
            from itk_rl.demo import run as runner  # torch, Ray, transformers: import when used
        runner(self.config(seed))
        return True

    def outcomes(self, seed: int) -> dict[str, tuple[TaskOutcome, ...]]:
        """The main job's evaluation of `seed`, read back."""
        return load_outcomes(self.seed_dir(seed) / EVAL_JSON)


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a `Study`, shared by the scripts that run or reuse one."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="outputs/seeds", help="the study's folder")
    parser.add_argument(
        "--data-seed", type=int, help="seed of the shared data build (default: the first seed)"
    )
    parser.add_argument(
        "--sft-overrides", nargs="*", default=[], help="appended to stages.sft.overrides"
    )
    parser.add_argument(
        "--grpo-overrides", nargs="*", default=[], help="appended to stages.grpo.overrides"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of recipes/demo.yaml")


def load_outcomes(path: Path) -> dict[str, tuple[TaskOutcome, ...]]:
    """Each system's task outcomes from an `eval.json` (`EvalResult.to_dict`)."""
    try:
        systems = json.loads(path.read_text())["systems"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not an evaluation written by the report ({exc})") from exc
    return {system["name"]: tuple(map(_task, system["tasks"])) for system in systems}


def _task(row: Mapping[str, Any]) -> TaskOutcome:
    steps = tuple(
        StepOutcome(
            tuple(AttemptOutcome(**attempt) for attempt in step["attempts"]),
            step["final"],
            step["scene_right"],
            step["image"],
        )
        for step in row["steps"]
    )
    return TaskOutcome(row["request"], row["num_steps"], steps, row["run"], row["error"])


# --- statistics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcrossSeeds:
    """A figure across seeds: the mean of the seeds' values, its two-level 95 % interval, the
    seeds' standard deviation (None below two seeds), and each seed's own value with its
    interval over tasks (the one that seed's report shows)."""

    value: float | None
    low: float | None
    high: float | None
    seed_sd: float | None
    per_seed: dict[int, Estimate]

    def to_dict(self) -> dict[str, Any]:
        def rounded(*values: float | None) -> list[float | None]:
            return [None if v is None else round(v, 4) for v in values]

        return {
            "mean": rounded(self.value)[0],
            "interval": rounded(self.low, self.high),
            "seed_sd": rounded(self.seed_sd)[0],
            "per_seed": {str(s): rounded(e.value, e.low, e.high) for s, e in self.per_seed.items()},
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def two_level_bootstrap(
    runs: Mapping[int, Arrays],
    base: Mapping[int, Arrays] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> AcrossSeeds:
    """A ratio metric across seeds (module docstring): `runs` maps each seed to the metric's
    arrays on the same tasks; with `base` (the other system's arrays, same seeds), the paired
    difference instead. Deterministic in `seed`; the task resamples are `evaluate_testbed`'s
    with that seed, so each seed's own interval is its report's."""
    seeds = list(runs)
    if not seeds:
        raise ValueError("no seed to bootstrap")
    if base is not None and list(base) != seeds:
        raise ValueError(f"runs has the seeds {seeds}, base {list(base)}: pair the same seeds")
    shapes = {runs[s][0].shape for s in seeds} | {runs[s][1].shape for s in seeds}
    if len(shapes) != 1:
        raise ValueError(f"every seed needs the same tasks, got arrays of shapes {shapes}")
    (num_tasks,) = shapes.pop()
    tasks = task_resamples(num_tasks, resamples, seed)  # [R, T]
    picks = np.random.default_rng([seed, 2]).integers(len(seeds), size=(resamples, len(seeds)))

    def ratios(arrays: Mapping[int, Arrays]) -> tuple[np.ndarray, np.ndarray]:
        """Each seed's ratio on all tasks [S] and on each task resample [S, R]."""
        num = np.stack([arrays[s][0] for s in seeds])
        den = np.stack([arrays[s][1] for s in seeds])
        full = _ratio(num.sum(axis=1), den.sum(axis=1))
        return full, _ratio(num[:, tasks].sum(axis=2), den[:, tasks].sum(axis=2))

    full, drawn = ratios(runs)
    if base is not None:
        base_full, base_drawn = ratios(base)
        full, drawn = full - base_full, drawn - base_drawn
    per_seed = {
        s: bootstrap_ratio(*runs[s], tasks, None if base is None else base[s]) for s in seeds
    }
    known = full[~np.isnan(full)]
    if known.size == 0:
        return AcrossSeeds(None, None, None, None, per_seed)
    value = float(known.mean())
    seed_sd = float(known.std(ddof=1)) if known.size > 1 else None
    chosen = np.take_along_axis(drawn.T, picks, axis=1)  # [R, S]: the drawn seeds' ratios
    counted = (~np.isnan(chosen)).sum(axis=1)
    replicates = _ratio(np.nansum(chosen, axis=1), counted.astype(float))
    if np.isnan(replicates).all():
        return AcrossSeeds(value, value, value, seed_sd, per_seed)
    low, high = np.nanpercentile(replicates, [2.5, 97.5])
    return AcrossSeeds(value, min(float(low), value), max(float(high), value), seed_sd, per_seed)


def summarise_seeds(
    evaluations: Mapping[int, Outcomes],
    systems: Sequence[str],
    differences: Sequence[tuple[str, str]],
    metrics: Sequence[str] = HEADLINE,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Each system's `metrics` across seeds and the paired differences (a, b) → "a - b", as
    plain data (`AcrossSeeds.to_dict`); figures undefined for a system (a verdict without a
    critic) are left out. `evaluations` maps each seed to its systems' outcomes."""
    requests = _check_paired(evaluations, [*systems, *(n for pair in differences for n in pair)])

    def across(name: str, metric: str, other: str | None = None) -> AcrossSeeds:
        def runs(system: str) -> dict[int, Arrays]:
            return {s: metric_arrays(e[system], metric) for s, e in evaluations.items()}

        base = None if other is None else runs(other)
        return two_level_bootstrap(runs(name), base, resamples, seed)

    def figures(name: str, other: str | None = None) -> dict[str, Any]:
        results = {m: across(name, m, other) for m in metrics}
        return {m: r.to_dict() for m, r in results.items() if r.value is not None}

    return {
        "seeds": list(evaluations),
        "tasks": len(requests),
        "systems": {name: figures(name) for name in systems},
        "differences": {f"{a} - {b}": figures(a, b) for a, b in differences},
    }


def format_figure(value: float, low: float, high: float, signed: bool = False) -> str:
    """'value [low, high]' to two decimals, the value `signed` for differences (+0.63 [0.34,
    0.94])."""
    return f"{value:{'+.2f' if signed else '.2f'}} [{low:.2f}, {high:.2f}]"


def _check_paired(evaluations: Mapping[int, Outcomes], systems: Sequence[str]) -> list[str]:
    """The tasks' requests, after checking that every seed has every system on them, in order."""
    if not evaluations:
        raise ValueError("no seed to summarise")
    requests: list[str] | None = None
    for seed, outcomes in evaluations.items():
        for name in systems:
            if name not in outcomes:
                raise ValueError(f"seed {seed} has no system {name!r} (has {sorted(outcomes)})")
            these = [task.request for task in outcomes[name]]
            if requests is None:
                requests = these
            elif these != requests:
                raise ValueError(
                    f"seed {seed}, system {name!r}: other held-out tasks than the first "
                    "seed's; the figures are paired on the same tasks"
                )
    return requests or []

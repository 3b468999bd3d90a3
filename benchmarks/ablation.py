"""The paper's ablations on the testbed, over the seeds of benchmarks/learning_seeds.py.

    RAY_AUTH_MODE=disabled python benchmarks/ablation.py [OVERRIDE …] --seeds 0 1 2
        --out outputs/seeds [--variants NAME …] [--table FILE] [--data-seed S]
        [--sft-overrides O …] [--grpo-overrides O …]

The same study as learning_seeds.py (the same --out and flags; OUT/settings.json must agree):
each seed's main job is reused, or run first where missing. Per seed, from its SFT critic:

    grpo_critic        the main job's GRPO critic: the recipe's reward (alpha 0.2)
    grpo_no_stepwise   GRPO with reward.alpha=1: the verdict's accuracy only, nothing re-rendered
    grpo_no_accuracy   GRPO with reward.alpha=0: the step-wise reward only
    grpo_staleness1    GRPO with algorithm.max_staleness=1 (overlapped steps; the same reward)
    grpo_dynamic_sampling  GRPO with algorithm.dynamic_sampling.oversample=2 (DAPO's filter)

(the format reward stays in every variant, and the GRPO stage is otherwise the main job's),
and the full GRPO critic evaluated at T_max 1, 3 and 5 attempts per step (3: the main job's
evaluation; `SystemSpec.max_attempts`). The pipeline keeps a step's last attempt unreviewed at
every T_max (the reference code's rule), so at T_max 1 the critic is never asked and the scores
are the generator alone's, on the same renders.

Resumable per (seed, variant): OUT/seed_<seed>/ablation/<variant>/ holds the variant's GRPO run
(resumed from its checkpoints) and its evaluation (eval.json, runs/); a variant whose eval.json
is there is not run again. Every figure is across seeds with the two-level interval of
`itk_rl.seeds`, and each variant is paired with the full GRPO critic and the SFT critic on
the same tasks. Each GRPO run's training log is summarised too (`training_summary`: its first
against its last 20 steps, per seed and across seeds), to tell a reward that rises from one
that does not. Writes both as Markdown to --table (default OUT/ablation.md, to paste into
docs/); the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from hydra.utils import instantiate
from omegaconf import DictConfig

from itk_rl.demo import heldout
from itk_rl.eval.metrics import TaskOutcome
from itk_rl.eval.report import TITLES, read_metrics
from itk_rl.eval.testbed import SystemSpec, checkpoint_critic, evaluate_testbed
from itk_rl.formats.files import write_atomic
from itk_rl.job import compose_recipe
from itk_rl.seeds import (
    HEADLINE,
    Study,
    add_study_arguments,
    format_figure,
    load_outcomes,
    summarise_seeds,
)
from itk_rl.testbed import TestbedJudge
from itk_rl.train import train

GRPO_VARIANTS = {
    "grpo_no_stepwise": "reward.alpha=1.0",
    "grpo_no_accuracy": "reward.alpha=0.0",
    "grpo_staleness1": "algorithm.max_staleness=1",
    "grpo_dynamic_sampling": "algorithm.dynamic_sampling.oversample=2.0",
}
"""The GRPO variants trained here: each one's override of the GRPO stage (staleness 1: the
next step's rollout and rewards run during the update, so learning must not suffer; dynamic
sampling: every update filled with groups whose rewards vary, drawing twice the records)."""
T_MAX = {"grpo_tmax1": 1, "grpo_tmax5": 5}
"""The full GRPO critic at other T_max than the main job's 3."""
ROWS = {
    "generator_alone": "generator alone",
    "sft_critic": "SFT critic",
    "grpo_critic": "GRPO, full reward (T_max 3)",
    "grpo_no_stepwise": "GRPO without the step-wise reward (alpha 1)",
    "grpo_no_accuracy": "GRPO without the accuracy reward (alpha 0)",
    "grpo_staleness1": "GRPO, full reward, max_staleness 1",
    "grpo_dynamic_sampling": "GRPO, full reward, dynamic sampling (oversample 2)",
    "grpo_tmax1": "GRPO, full reward, T_max 1",
    "grpo_tmax5": "GRPO, full reward, T_max 5",
}
VARIANTS = [*GRPO_VARIANTS, *T_MAX]
TRAINING = {
    "reward/total": "reward",
    "reward/accuracy": "accuracy term",
    "reward/step": "step-wise term",
    "groups_trained_with_signal": "groups with signal in the update",
    "actor/kl": "KL to SFT",
}
"""The training figures summarised per GRPO run (`groups_trained_with_signal`: the update's
groups whose rewards vary, `data/groups` − `data/zero_variance_groups`)."""
WINDOW = 20
"""Steps averaged at each end of a training log."""
DIFFERENCES = [
    *((name, "grpo_critic") for name in VARIANTS),
    *((name, "sft_critic") for name in ["grpo_critic", *VARIANTS]),
]


def evaluate_critic(cfg: DictConfig, name: str, checkpoint: Path, t_max: int, out: Path) -> None:
    """The critic at `checkpoint` on the main job's held-out tasks and renders, at `t_max`
    attempts per step → `out`/eval.json (written last: it marks the variant finished)."""
    batch = cfg.evaluation.concurrent_tasks
    critic = checkpoint_critic(checkpoint, max_batch_size=batch)
    spec = SystemSpec(critic, f"{ROWS[name]}: {checkpoint}", t_max)
    generator = instantiate(cfg.evaluation.generator)
    result = evaluate_testbed(
        {name: spec}, heldout(cfg), generator, TestbedJudge(), out, concurrent_tasks=batch
    )
    write_atomic(out / "eval.json", json.dumps(result.to_dict(), allow_nan=False))


def run_dir(study: Study, seed: int, name: str) -> Path:
    """Where `name` of `seed` is trained and evaluated: the main job's GRPO stage for
    `grpo_critic`, else OUT/seed_<seed>/ablation/<name>."""
    if name == "grpo_critic":
        return study.seed_dir(seed) / "critic_grpo"
    return study.seed_dir(seed) / "ablation" / name


def run_variants(
    study: Study, seed: int, variants: Sequence[str]
) -> dict[str, tuple[TaskOutcome, ...]]:
    """`variants` of `seed` (trained and evaluated where not finished), with the main job's
    systems: each system's outcomes on the held-out tasks."""
    cfg = study.config(seed)
    outcomes = study.outcomes(seed)
    full = run_dir(study, seed, "grpo_critic") / "final"
    for name in variants:
        out = run_dir(study, seed, name)
        if not (out / "eval.json").is_file():
            start = time.perf_counter()
            checkpoint, t_max = full, T_MAX.get(name, 3)
            if name in GRPO_VARIANTS:
                grpo = cfg.stages.grpo
                overrides = [*grpo.overrides, f"output_dir={out}", GRPO_VARIANTS[name]]
                checkpoint = train(compose_recipe(grpo.recipe, overrides))
            evaluate_critic(cfg, name, checkpoint, t_max, out)
            print(f"[ablation] seed {seed}, {name}: {time.perf_counter() - start:.0f} s")
        outcomes |= load_outcomes(out / "eval.json")
    return outcomes


def training_ends(records: Sequence[Mapping[str, float]], window: int = WINDOW) -> dict:
    """Each `TRAINING` figure's mean over the first and over the last `window` steps of one
    run's log (a figure absent from every step of a window is left out)."""
    ordered = sorted(records, key=lambda record: record["step"])
    if len(ordered) < 2 * window:
        raise ValueError(f"{len(ordered)} logged steps: fewer than two windows of {window}")

    def value(record: Mapping[str, float], key: str) -> float | None:
        if key == "groups_trained_with_signal":
            if "data/groups" not in record:
                return None
            return record["data/groups"] - record.get("data/zero_variance_groups", 0.0)
        return record.get(key)

    ends = {}
    for key in TRAINING:
        first = [v for r in ordered[:window] if (v := value(r, key)) is not None]
        last = [v for r in ordered[-window:] if (v := value(r, key)) is not None]
        if first and last:
            ends[key] = {"first": float(np.mean(first)), "last": float(np.mean(last))}
    return ends


def training_summary(study: Study, seeds: Sequence[int], names: Sequence[str]) -> dict:
    """`training_ends` of each GRPO run named (`grpo_critic`: the main job's) for every seed,
    and their across-seed means: {name: {"seeds": {seed: ends}, "mean": ends}}."""
    summary = {}
    for name in names:
        per_seed = {}
        for seed in seeds:
            log = run_dir(study, seed, name) / "metrics.jsonl"
            try:
                per_seed[seed] = training_ends(read_metrics(log))
            except ValueError as error:
                raise ValueError(f"{log}: {error}") from error
        keys = set.intersection(*(set(ends) for ends in per_seed.values()))
        mean = {
            key: {
                end: float(np.mean([per_seed[seed][key][end] for seed in seeds]))
                for end in ("first", "last")
            }
            for key in TRAINING
            if key in keys
        }
        summary[name] = {"seeds": per_seed, "mean": mean}
    return summary


def training_table(summary: Mapping[str, Any]) -> str:
    """The Markdown table of `training_summary`: a row per run, a cell per figure reading
    "first → last" (the across-seed mean, then each seed's in parentheses)."""

    def cell(run: Mapping[str, Any], key: str) -> str:
        if key not in run["mean"]:
            return "—"
        digits = 1 if key == "groups_trained_with_signal" else 3
        mean = run["mean"][key]
        each = ", ".join(
            f"{ends[key]['first']:.{digits}f} → {ends[key]['last']:.{digits}f}"
            for ends in run["seeds"].values()
        )
        return f"{mean['first']:.{digits}f} → {mean['last']:.{digits}f} ({each})"

    head = ["GRPO run", *TRAINING.values()]
    rows = [[ROWS[name], *(cell(run, key) for key in TRAINING)] for name, run in summary.items()]
    lines = [
        f"Training, mean of the first → the last {WINDOW} steps: across seeds (each seed's).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(cells) + " |" for cells in rows),
    ]
    return "\n".join(lines) + "\n"


def table(summary: Mapping[str, Any]) -> str:
    """The Markdown table: each system's figures, then its differences from full GRPO and SFT."""

    def cell(figures: Mapping[str, Any], metric: str, signed: bool = False) -> str:
        figure = figures.get(metric)
        if figure is None:
            return "—"
        return format_figure(figure["mean"], *figure["interval"], signed)

    differences = summary["differences"]
    head = [
        "system",
        *(TITLES[m] for m in HEADLINE),
        "− full GRPO, score per step",
        "− full GRPO, verdict accuracy",
        "− SFT critic, score per step",
    ]
    rows = []
    for name, label in ROWS.items():
        if name not in summary["systems"]:
            continue
        versus_full = differences.get(f"{name} - grpo_critic", {})
        versus_sft = differences.get(f"{name} - sft_critic", {})
        cells = [label, *(cell(summary["systems"][name], m) for m in HEADLINE)]
        cells += [
            cell(versus_full, "final_score", True),
            cell(versus_full, "verdict_accuracy", True),
            cell(versus_sft, "final_score", True),
        ]
        rows.append(cells)
    seeds = ", ".join(map(str, summary["seeds"]))
    lines = [
        f"Seeds {seeds}; {summary['tasks']} held-out tasks; across-seed mean [95 % two-level "
        "bootstrap interval: seeds, then tasks, paired on the same tasks].",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(cells) + " |" for cells in rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--table", help="the Markdown table's file (default OUT/ablation.md)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    args = parser.parse_args(argv)
    study = Study.from_args(args)
    study.record_settings()
    evaluations = {}
    for seed in args.seeds:
        study.run_seed(seed)
        evaluations[seed] = run_variants(study, seed, args.variants)
    if ray.is_initialized():  # started by the jobs: its log forwarding ends with it
        ray.shutdown()
    systems = [name for name in ROWS if name not in VARIANTS or name in args.variants]
    differences = [pair for pair in DIFFERENCES if pair[0] in systems]
    summary = summarise_seeds(evaluations, systems, differences)
    runs = ["grpo_critic", *(name for name in GRPO_VARIANTS if name in args.variants)]
    training = training_summary(study, args.seeds, runs)
    markdown = table(summary) + "\n" + training_table(training)
    path = Path(args.table or Path(args.out) / "ablation.md")
    write_atomic(path, markdown)
    print(markdown)
    print(json.dumps({**summary, "training": training, "table": str(path.resolve())}))


if __name__ == "__main__":
    main()

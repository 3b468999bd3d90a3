"""The main job over several seeds: does GRPO beat SFT by more than training's own variance?

    RAY_AUTH_MODE=disabled python benchmarks/learning_seeds.py [OVERRIDE …] --seeds 0 1 2
        --out outputs/seeds [--data-seed S] [--sft-overrides O …] [--grpo-overrides O …]

Runs the main job (`itk_rl.demo`: critic SFT → critic GRPO → held-out evaluation) once per
seed in OUT/seed_<seed>/. The seed is that of the tiny weights, of training and of sampling;
the held-out tasks and their renders stay fixed (`evaluation.task_seed`). The data build is
shared (OUT/data, built once with `--data-seed`, default the first seed): the question is what
training does with one data set, and a build of 24000 prompts costs several minutes per seed
(`itk_rl.seeds` says more). Resumable per seed: a seed whose figures.json is there is not
run again, an unfinished one resumes its stages; OUT/settings.json records the overrides, and a
run asking for others is refused. `OVERRIDE`s apply to `recipes/demo.yaml` (give them before
the flags); `--sft-overrides` / `--grpo-overrides` are appended to that stage's overrides.

Prints, for each system (generator alone, SFT critic, GRPO critic) and each paired difference
(GRPO − SFT, SFT − generator, GRPO − generator): the score per step, the right-scene rate and
the verdict accuracy, per seed with its interval over tasks and across seeds with a two-level
bootstrap interval (seeds, then tasks, paired on the same tasks: `itk_rl.seeds`), since
one run's interval does not hold training's variance. Writes OUT/learning_seeds.json and
OUT/learning_seeds.png (per-seed points, across-seed intervals); the last line of stdout is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from matplotlib.figure import Figure

from itk_rl.eval.report import TITLES
from itk_rl.formats.files import write_atomic
from itk_rl.seeds import (
    HEADLINE,
    Study,
    add_study_arguments,
    format_figure,
    summarise_seeds,
)

SYSTEMS = ("generator_alone", "sft_critic", "grpo_critic")
DIFFERENCES = (
    ("grpo_critic", "sft_critic"),
    ("sft_critic", "generator_alone"),
    ("grpo_critic", "generator_alone"),
)


def lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per system or difference and metric: each seed's figure, then across seeds."""
    out = []
    for group, signed in (("systems", False), ("differences", True)):
        for name, figures in summary[group].items():
            for metric, figure in figures.items():
                seeds = "  ".join(
                    f"seed {seed} {format_figure(*values, signed)}"
                    for seed, values in figure["per_seed"].items()
                    if values[0] is not None
                )
                across = format_figure(figure["mean"], *figure["interval"], signed)
                sd = "" if figure["seed_sd"] is None else f", seed sd {figure['seed_sd']:.2f}"
                out.append(
                    f"[seeds] {name}, {TITLES[metric]}: {seeds}  | across "
                    f"{len(figure['per_seed'])} seeds {across}{sd}"
                )
    return out


def plot(summary: Mapping[str, Any], path: Path) -> None:
    """A panel per metric for the systems (top) and the differences (bottom): each seed's value
    with its interval over tasks (dots), the across-seed mean with its two-level interval."""
    figure = Figure(figsize=(4.2 * len(HEADLINE), 7.5), layout="constrained")
    grid = figure.subplots(2, len(HEADLINE), squeeze=False)
    for row, group in enumerate(("systems", "differences")):
        for axes, metric in zip(grid[row], HEADLINE, strict=True):
            shown = [(n, f[metric]) for n, f in summary[group].items() if metric in f]
            for x, (_, entry) in enumerate(shown):
                seeds = [v for v in entry["per_seed"].values() if v[0] is not None]
                for k, (value, low, high) in enumerate(seeds):
                    offset = 0.3 * (k + 1) / (len(seeds) + 1) - 0.2
                    error = [[value - low], [high - value]]
                    axes.errorbar(x + offset, value, error, fmt="o", ms=3, color="0.55", lw=0.8)
                low, high = entry["interval"]
                error = [[entry["mean"] - low], [high - entry["mean"]]]
                axes.errorbar(x + 0.2, entry["mean"], error, fmt="D", color=f"C{x}", capsize=5)
            axes.set_xlim(-0.5, len(shown) - 0.5)
            if row == 1:
                axes.axhline(0.0, color="0.3", lw=0.6)
            names = [name.replace(" - ", " −\n") for name, _ in shown]
            axes.set_xticks(range(len(shown)), names, fontsize=7)
            axes.set_title(("" if row == 0 else "Δ ") + TITLES[metric], fontsize=9)
    seeds = ", ".join(map(str, summary["seeds"]))
    figure.suptitle(
        f"{summary['tasks']} held-out tasks, seeds {seeds}: grey, each seed (interval over tasks); "
        "diamond, across seeds (two-level bootstrap)",
        fontsize=9,
    )
    figure.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    args = parser.parse_args(argv)
    study = Study.from_args(args)
    study.record_settings()
    timings = {}
    for seed in args.seeds:
        start = time.perf_counter()
        ran = study.run_seed(seed)
        timings[str(seed)] = round(time.perf_counter() - start, 1) if ran else "reused"
        print(f"[seeds] seed {seed}: {'ran' if ran else 'finished before, reused'}", flush=True)
    if ray.is_initialized():  # the job started it: its log forwarding ends with it
        ray.shutdown()
    evaluations = {seed: study.outcomes(seed) for seed in args.seeds}
    summary = summarise_seeds(evaluations, SYSTEMS, DIFFERENCES)
    for line in lines(summary):
        print(line)
    out = Path(args.out)
    plot(summary, out / "learning_seeds.png")
    result = {
        **summary,
        "data_seed": study.data_seed,
        "seconds_per_seed": timings,
        "plot": str((out / "learning_seeds.png").resolve()),
    }
    write_atomic(out / "learning_seeds.json", json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

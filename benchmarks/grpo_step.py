"""Where a critic GRPO step spends its time, on the testbed recipe (not a timed test).

    python benchmarks/grpo_step.py [--steps 6] [hydra overrides…]

Runs `testbed_critic_grpo` for a few steps in a fresh folder and prints, as one JSON object on
the last line, the mean time of each phase, the generator pool's busy fraction and the
responses per second, over the steps after the first (which pays one-off warm-up costs).

The tiny critic starts from random weights, so every group's rewards are equal; the benchmark
keeps such groups in the update (`algorithm.skip_zero_variance_groups=false`) so that the
update phase is measured too (with zero advantages it costs the same).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module

from itk_rl.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps to run (>= 2)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the recipe")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2: the first step is warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"output_dir={tmp}/run",
            f"total_steps={args.steps}",
            f"checkpoint_every={args.steps}",
            "resume=never",
            "algorithm.skip_zero_variance_groups=false",
            *args.overrides,
        ]
        with initialize_config_module("itk_rl.recipes", version_base="1.3"):
            cfg = compose("testbed_critic_grpo", overrides=overrides)
        train(cfg)
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines][1:]

    def mean(key: str) -> float:
        return statistics.fmean(step[key] for step in steps)

    phases = sorted(k for k in steps[0] if k.startswith("time/") and k != "time/step_s")
    result = {
        "steps_measured": len(steps),
        "responses_per_step": steps[0]["data/responses_rewarded"],
        "step_s": mean("time/step_s"),
        "phase_s": {key.removeprefix("time/").removesuffix("_s"): mean(key) for key in phases},
        "generator_busy_fraction": mean("perf/generator_busy_fraction"),
        "samples_per_s": mean("perf/samples_per_s"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Held-out testbed evaluation: generator alone vs the pipeline with SFT / GRPO / oracle critics.

    RAY_AUTH_MODE=disabled python benchmarks/testbed_eval.py [--sft DIR] [--grpo DIR]
        [--tasks N] [--task-seed S] [--synonym-rate R] [--concurrent-tasks N] [--seed 0]
        [--out DIR] [--curves NAME=metrics.jsonl …] [--train-set FILE …] [--no-oracle]
        [OVERRIDE …]

The systems and the world they render in are the main job's (`itk_rl.eval.testbed.
heldout_systems` on `recipes/demo.yaml`), so the job's checkpoints are measured in the world
they were trained and evaluated in; `OVERRIDE`s of that recipe change it, e.g.
`world.misrender_prob=1.0 world.artifact_prob=0.0` (before `--curves` and `--train-set`, which
take every word after them). The task flags default to the recipe's `evaluation` too.

Every system gets the ground-truth plan; they differ in the critic only (itk_rl.eval.testbed says
why). Held-out requests come from a TaskSampler seed no training recipe uses; requests found in
a `--train-set` (a data build's prompts.jsonl, or a parquet with request/origin_prompt columns)
are skipped, then checked again. Writes OUT/runs/… and OUT/report/index.html, then prints the
figures — per system each metric as [value, 95 % CI low, high], and the world's generator
config — as one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from itk_rl.eval.heldout import check_heldout, heldout_tasks, training_texts
from itk_rl.eval.report import write_report
from itk_rl.eval.testbed import evaluate_testbed, heldout_systems
from itk_rl.job import compose_recipe, plain
from itk_rl.testbed import TestbedJudge

FLAGS = {
    "tasks": "evaluation.num_tasks",
    "task_seed": "evaluation.task_seed",
    "synonym_rate": "evaluation.synonym_rate",
    "concurrent_tasks": "evaluation.concurrent_tasks",
}
"""Flags that override a key of the demo recipe (default: the recipe's value)."""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", help="exported SFT critic (save_pretrained folder)")
    parser.add_argument("--grpo", help="exported GRPO critic (save_pretrained folder)")
    parser.add_argument("--no-oracle", action="store_true", help="leave out the oracle critic")
    parser.add_argument("--tasks", type=int, help="held-out tasks")
    parser.add_argument("--task-seed", type=int)
    parser.add_argument("--synonym-rate", type=float)
    parser.add_argument("--concurrent-tasks", type=int, help="tasks whose critic calls are batched")
    parser.add_argument("--seed", type=int, default=0, help="pipeline and bootstrap seed")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="device of the trained critics")
    parser.add_argument("--out", default="outputs/testbed_eval")
    parser.add_argument("--curves", nargs="*", default=[], metavar="NAME=PATH")
    parser.add_argument("--train-set", nargs="*", default=[], metavar="PATH")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of recipes/demo.yaml")
    args = parser.parse_args(argv)

    given = {key: getattr(args, flag) for flag, key in FLAGS.items()}
    flags = [f"{key}={value}" for key, value in given.items() if value is not None]
    cfg = compose_recipe("demo", [*flags, *args.overrides])
    evaluation = cfg.evaluation
    training = set().union(*(training_texts(path) for path in args.train_set))
    tasks = heldout_tasks(
        evaluation.num_tasks, evaluation.task_seed, evaluation.synonym_rate, exclude=training
    )
    step_overlap = check_heldout(tasks, training)
    systems, generator = heldout_systems(
        cfg,
        args.sft,
        args.grpo,
        oracle=not args.no_oracle,
        max_attempts=args.max_attempts,
        device=args.device,
    )
    start = time.perf_counter()
    result = evaluate_testbed(
        systems,
        tasks,
        generator,
        TestbedJudge(),
        args.out,
        args.seed,
        concurrent_tasks=evaluation.concurrent_tasks,
    )
    elapsed = time.perf_counter() - start
    curves = dict(item.split("=", 1) for item in args.curves)
    report = write_report(args.out, result, curves)
    figures = {
        "report": str(report.resolve()),
        "tasks": len(tasks),
        "task_seed": evaluation.task_seed,
        "synonym_rate": evaluation.synonym_rate,
        "generator": plain(evaluation.generator),
        "checkpoints": {"sft": args.sft, "grpo": args.grpo},
        "train_texts": len(training),
        "heldout_step_prompts_seen_in_training": round(step_overlap, 4),
        "eval_s": round(elapsed, 1),
        "systems": result.figures(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

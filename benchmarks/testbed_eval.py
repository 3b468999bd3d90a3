"""Held-out testbed evaluation: generator alone vs the pipeline with SFT / GRPO / oracle critics.

    RAY_AUTH_MODE=disabled python benchmarks/testbed_eval.py [--sft DIR] [--grpo DIR]
        [--tasks 100] [--seed 0] [--out DIR] [--curves NAME=metrics.jsonl …]
        [--train-set FILE …] [--synonym-rate 0.5] [--misrender-prob 1.0] [--no-oracle]
        [--concurrent-tasks 64]

Every system gets the ground-truth plan; they differ in the critic only (itk_rl.evaluate says
why). Held-out requests come from a TaskSampler seed no training recipe uses; requests found in
a `--train-set` (a data build's prompts.jsonl, or a parquet with request/origin_prompt columns)
are skipped, then checked again. Writes OUT/runs/… and OUT/report/index.html, then prints the
figures — per system each metric as [value, 95 % CI low, high] — as one JSON object on its
last line.
"""

from __future__ import annotations

import argparse
import json
import time

from itk_rl.evaluate import (
    HELDOUT_SEED,
    SystemSpec,
    check_heldout,
    checkpoint_critic,
    evaluate_testbed,
    heldout_tasks,
    oracle_critic,
    training_texts,
)
from itk_rl.report import write_report
from itk_rl.testbed import TestbedGenerator, TestbedJudge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", help="exported SFT critic (save_pretrained folder)")
    parser.add_argument("--grpo", help="exported GRPO critic (save_pretrained folder)")
    parser.add_argument("--no-oracle", action="store_true", help="leave out the oracle critic")
    parser.add_argument("--tasks", type=int, default=100, help="held-out tasks")
    parser.add_argument("--seed", type=int, default=0, help="pipeline and bootstrap seed")
    parser.add_argument("--task-seed", type=int, default=HELDOUT_SEED)
    parser.add_argument("--synonym-rate", type=float, default=0.5)
    parser.add_argument("--misrender-prob", type=float, default=1.0)
    parser.add_argument("--artifact-prob", type=float, default=0.0)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="device of the trained critics")
    parser.add_argument(
        "--concurrent-tasks", type=int, default=64, help="tasks whose critic calls are batched"
    )
    parser.add_argument("--out", default="outputs/testbed_eval")
    parser.add_argument("--curves", nargs="*", default=[], metavar="NAME=PATH")
    parser.add_argument("--train-set", nargs="*", default=[], metavar="PATH")
    args = parser.parse_args()

    training = set().union(*(training_texts(path) for path in args.train_set))
    tasks = heldout_tasks(args.tasks, args.task_seed, args.synonym_rate, exclude=training)
    step_overlap = check_heldout(tasks, training)
    systems = {"generator_alone": SystemSpec(description="none (each step rendered once)")}
    for name, path in (("sft", args.sft), ("grpo", args.grpo)):
        if path:
            critic = checkpoint_critic(
                path, device=args.device, max_batch_size=args.concurrent_tasks
            )
            versus = "sft" if name == "grpo" and args.sft else None
            systems[name] = SystemSpec(
                critic, f"{name.upper()} critic {path}", args.max_attempts, compare_with=versus
            )
    if not args.no_oracle:
        systems["oracle"] = SystemSpec(oracle_critic(), "oracle (exact judge)", args.max_attempts)
    start = time.perf_counter()
    generator = TestbedGenerator(
        misrender_prob=args.misrender_prob, artifact_prob=args.artifact_prob
    )
    result = evaluate_testbed(
        systems,
        tasks,
        generator,
        TestbedJudge(),
        args.out,
        args.seed,
        concurrent_tasks=args.concurrent_tasks,
    )
    elapsed = time.perf_counter() - start
    curves = dict(item.split("=", 1) for item in args.curves)
    report = write_report(args.out, result, curves)
    figures = {
        "report": str(report.resolve()),
        "tasks": len(tasks),
        "task_seed": args.task_seed,
        "synonym_rate": args.synonym_rate,
        "train_texts": len(training),
        "heldout_step_prompts_seen_in_training": round(step_overlap, 4),
        "eval_s": round(elapsed, 1),
        "systems": result.figures(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""The main job on a CPU: `python -m itk_rl.demo [overrides]` (recipe `recipes/demo.yaml`).

Four stages, each its own recipe composed with the overrides `demo.yaml` lists, each resumable
(rerun the job and finished stages are skipped or continued from their checkpoints):

1. critic SFT (`testbed_critic_sft`): builds the tiny models and the testbed datasets (the data
   build: prompts → teacher trajectories → Critic-SFT / Critic-RL / Planner-SFT), then the
   format cold start of a tiny critic;
2. critic GRPO (`testbed_critic_grpo`) from the SFT critic on the Critic-RL split, with the
   accuracy and step-wise rewards, on a local Ray cluster;
3. evaluation on held-out requests never seen in training: generator alone, the pipeline with
   the SFT critic, with the GRPO critic (and the oracle critic as an upper bound);
4. the report: `report/index.html` with the training curves, the comparison and examples.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from itk_rl.eval.heldout import check_heldout, heldout_tasks, training_texts
from itk_rl.eval.report import ONE_RUN, write_report
from itk_rl.eval.testbed import evaluate_testbed, heldout_systems
from itk_rl.job import compose_recipe
from itk_rl.sft import sft
from itk_rl.testbed import TestbedJudge, TestbedTask
from itk_rl.train import train


def stage(cfg: DictConfig, name: str) -> DictConfig:
    """The composed recipe of stage `name` (`cfg.stages[name]`: a recipe and its overrides)."""
    spec = cfg.stages[name]
    return compose_recipe(spec.recipe, list(spec.overrides))


def heldout(cfg: DictConfig) -> list[TestbedTask]:
    """The held-out tasks of `cfg.evaluation`, none of them among the data build's prompts."""
    evaluation = cfg.evaluation
    training = training_texts(Path(evaluation.training_data) / "prompts.jsonl")
    tasks = heldout_tasks(
        evaluation.num_tasks,
        seed=evaluation.task_seed,
        synonym_rate=evaluation.synonym_rate,
        exclude=training,
    )
    check_heldout(tasks, training)
    return tasks


def evaluate(cfg: DictConfig, sft_final: Path, grpo_final: Path, out: Path) -> dict:
    """Stage 3 and 4: the held-out comparison and the report; returns the figures."""
    evaluation = cfg.evaluation
    tasks = heldout(cfg)
    systems, generator = heldout_systems(cfg, sft_final, grpo_final)
    # Run pages go to out/runs/, beside report/ which links to them.
    result = evaluate_testbed(
        systems, tasks, generator, TestbedJudge(), out, concurrent_tasks=evaluation.concurrent_tasks
    )
    curves = {
        "critic SFT": sft_final.parent / "metrics.jsonl",
        "critic GRPO": grpo_final.parent / "metrics.jsonl",
    }
    report = write_report(out, result, curves)
    return {"report": str(report.resolve()), "tasks": len(tasks), "systems": result.figures()}


def run(cfg: DictConfig) -> Path:
    """The whole job; returns the report's path."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    timings = {}
    start = time.perf_counter()
    print("[demo] 1/3 critic SFT (builds the tiny models and the testbed datasets first)")
    sft_final = sft(stage(cfg, "sft"))
    timings["sft_s"] = time.perf_counter() - start
    print("[demo] 2/3 critic GRPO on a local Ray cluster")
    grpo_final = train(stage(cfg, "grpo"))
    timings["grpo_s"] = time.perf_counter() - start - timings["sft_s"]
    print("[demo] 3/3 held-out evaluation and report")
    figures = evaluate(cfg, sft_final, grpo_final, out)
    timings["evaluation_s"] = time.perf_counter() - start - timings["sft_s"] - timings["grpo_s"]
    figures["timings"] = timings
    (out / "figures.json").write_text(json.dumps(figures, indent=2))
    print(f"[demo] {json.dumps(figures)}")
    print(f"[demo] report: {figures['report']}")
    print(f"[demo] {ONE_RUN}")
    return Path(figures["report"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m itk_rl.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of recipes/demo.yaml")
    args = parser.parse_args(argv)
    run(compose_recipe("demo", args.overrides))


if __name__ == "__main__":
    main()

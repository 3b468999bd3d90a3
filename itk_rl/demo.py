"""The main job on a CPU: `python -m itk_rl.demo [hydra overrides]` (recipe `recipes/demo.yaml`).

Builds the tiny models offline (a word-level tokenizer trained on the testbed corpus, tiny
Qwen2.5-VL / Qwen3-VL, a tiny FLUX.2-klein), then renders each sampled testbed task's
ground-truth plan step by step — step 1 text-to-image, every later step an edit of the previous
step's image — and scores every step with the judge. Each task is written as a run folder
(`index.html` to look at, `trajectory.json`, PNG files) and the scores are summed up in
`summary.json`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from itk_rl.formats import (
    Attempt,
    Request,
    StepRecord,
    Trajectory,
    format_planner_answer,
    parse_planner_output,
)
from itk_rl.output import RunFolder
from itk_rl.page import FINISHED, RunStatus
from itk_rl.rollout.generator import ImageGenerator, RenderRequest
from itk_rl.testbed import TestbedJudge, TestbedTask, corpus
from itk_rl.tiny import build_tiny_models

PAGE_NOTES = {"plan": "ground truth", "critic": "none (one attempt per step, judged)"}


def render_ground_truth(
    task: TestbedTask, generator: ImageGenerator, judge: TestbedJudge, seed: int
) -> Trajectory:
    """Render `task.plan` as written (no critic), one attempt per step, each judged."""
    # Through the real answer format and parser, as a planner's output would come.
    planner = parse_planner_output(format_planner_answer(task.plan, think="ground-truth plan"))
    records, before = [], None
    for index, step in enumerate(task.plan.steps):
        references = () if before is None else (before,)
        request = RenderRequest(step.prompt, references=references, seed=seed + index)
        (image,) = generator([request])
        score = judge.score(step.prompt, image, before)
        attempt = Attempt(prompt=step.prompt, seed=request.seed, image=image, score=score)
        records.append(StepRecord(step=step, attempts=(attempt,), final_attempt=0))
        before = image
    return Trajectory(request=Request(task.request), planner=planner, steps=tuple(records))


def summarise(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Mean judge scores over all steps, and how many steps the generator got fully right."""
    scores = [record.final.score for t in trajectories for record in t.steps]
    return {
        "tasks": len(trajectories),
        "steps": len(scores),
        "mean_semantics": statistics.fmean(s.semantics for s in scores),
        "mean_quality": statistics.fmean(s.quality for s in scores),
        "mean_overall": statistics.fmean(s.overall for s in scores),
        "steps_fully_right": sum(s.semantics == 10 for s in scores),
    }


def run(cfg: DictConfig) -> Path:
    """The job; returns the output folder."""
    out = Path(cfg.output_dir)
    models = build_tiny_models(
        out / "tiny_models", tokenizer_kind="word", corpus=list(corpus()), seed=cfg.seed
    )
    print(f"[demo] tiny models in {models.root}")
    generator = instantiate(cfg.generator)
    judge = instantiate(cfg.judge)
    tasks = instantiate(cfg.tasks).sample(cfg.num_tasks)
    trajectories = []
    for index, task in enumerate(tasks):
        trajectory = render_ground_truth(task, generator, judge, seed=1000 * index)
        folder = RunFolder(out / "tasks" / f"task_{index:03d}", task.request, PAGE_NOTES)
        folder.write(trajectory, RunStatus(FINISHED, f"rendered {len(trajectory.steps)} step(s)"))
        overall = [f"{record.final.score.overall:.1f}" for record in trajectory.steps]
        print(f"[demo] task {index + 1}/{len(tasks)}: steps scored {', '.join(overall)}")
        trajectories.append(trajectory)
    summary = summarise(trajectories)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[demo] {json.dumps(summary)}")
    print(f"[demo] output written to {out.resolve()}")
    return out


@hydra.main(config_path="pkg://itk_rl.recipes", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()

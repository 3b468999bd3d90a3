"""The main job end to end on a small configuration, read back from what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_module

from itk_rl.demo import run
from itk_rl.formats import Trajectory
from itk_rl.formats.images import white_canvas
from itk_rl.testbed import TaskSampler, TestbedJudge


def test_demo_writes_judged_trajectories_of_the_sampled_tasks(tmp_path: Path) -> None:
    overrides = [f"output_dir={tmp_path}", "num_tasks=3", "tasks.synonym_rate=0.5"]
    with initialize_config_module("itk_rl.recipes", version_base="1.3"):
        cfg = compose("demo", overrides=overrides)
    out = run(cfg)

    assert (out / "tiny_models" / "tiny_models.json").is_file()
    tasks = TaskSampler(seed=cfg.tasks.seed, synonym_rate=0.5, min_steps=2, max_steps=4)
    judge = TestbedJudge()
    overall = []
    for index, task in enumerate(tasks.sample(3)):
        task_dir = out / "tasks" / f"task_{index:03d}"
        data = json.loads((task_dir / "trajectory.json").read_text())
        trajectory = Trajectory.from_json_dict(data, task_dir / "images")
        assert trajectory.request.text == task.request
        assert trajectory.plan == task.plan
        before = white_canvas(48, 48)
        for record, step in zip(trajectory.steps, task.plan.steps, strict=True):
            image = record.final.image
            # The stored score is the judge's verdict on the stored image.
            rescored = judge.score(step.prompt, image, None if step.step_number == 1 else before)
            assert record.final.score == rescored
            overall.append(rescored.overall)
            before = image

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == len(overall)
    assert abs(summary["mean_overall"] - sum(overall) / len(overall)) < 1e-9

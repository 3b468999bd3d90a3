"""The main job end to end on a very small configuration, read back from what it wrote.

Learning is not asserted here (a few steps of a tiny model prove nothing); the structure is:
every stage ran, the evaluation used held-out requests only, and the report links resolve.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from itk_rl.demo import run
from itk_rl.evaluate import training_texts
from itk_rl.recipes_compose import compose_recipe

SMALL = {
    "sft": [
        "prepare.data_overrides=['prompts.count=24','prompts.seed=0']",
        "epochs=1",
        "max_steps=2",
        "eval_every=1",
        "data.batch_size=8",
        "data.max_eval_samples=8",
        "check.num_prompts=2",
        "check.max_new_tokens=16",
    ],
    "grpo": [
        "total_steps=1",
        "data.batch_size=2",
        "rollout.sampling.n=2",
        "rollout.sampling.max_new_tokens=16",
    ],
}


@pytest.mark.usefixtures("ray_local")
def test_main_job_trains_evaluates_on_heldout_requests_and_reports(tmp_path: Path) -> None:
    cfg = compose_recipe("demo", [f"output_dir={tmp_path}", "evaluation.num_tasks=2"])
    for name, extra in SMALL.items():
        cfg.stages[name].overrides.extend(extra)
    report = run(cfg)

    figures = json.loads((tmp_path / "figures.json").read_text())
    assert set(figures["systems"]) == {
        "generator_alone",
        "sft_critic",
        "grpo_critic",
        "oracle_critic",
    }
    assert (tmp_path / "critic_sft" / "final" / "config.json").is_file()
    assert (tmp_path / "critic_grpo" / "final" / "config.json").is_file()

    # Held out: no evaluated request is among the data build's prompts.
    training = training_texts(tmp_path / "critic_sft" / "inputs" / "data" / "prompts.jsonl")
    runs = tmp_path / "runs" / "grpo_critic"
    evaluated = [
        json.loads((folder / "trajectory.json").read_text())["request"]["text"]
        for folder in sorted(runs.iterdir())
    ]
    assert len(evaluated) == 2 and not set(evaluated) & training

    html = report.read_text()
    for target in re.findall(r'(?:href|src)="([^"#]+)"', html):
        assert (report.parent / target).exists(), target
    assert "grpo_critic" in html and "curves_" in html

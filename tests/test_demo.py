"""The main job end to end on a very small configuration, read back from what it wrote.

Learning is not asserted here (a few steps of a tiny model prove nothing); the structure is:
every stage ran, the evaluation used held-out requests only, and the report links resolve.
And how the stages are composed: one world for every stage, and the standalone recipes
already holding the settings the job adopted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from itk_rl.demo import run, stage
from itk_rl.eval.heldout import training_texts
from itk_rl.job import compose_recipe

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


def test_every_stage_renders_in_the_jobs_world() -> None:
    # The data build (run by the sft stage's prepare), the reward's re-renders and the
    # evaluation all get `world`, changed or not.
    cfg = compose_recipe("demo", ["world.misrender_prob=0.3", "world.artifact_prob=0.05"])
    world = OmegaConf.to_container(cfg.world, resolve=True)
    prepare = stage(cfg, "sft").prepare
    build = compose_recipe(prepare.data_recipe, list(prepare.data_overrides))
    assert OmegaConf.to_container(build.generator, resolve=True) == world
    grpo = stage(cfg, "grpo")
    assert OmegaConf.to_container(grpo.generator.component, resolve=True) == world
    assert OmegaConf.to_container(cfg.evaluation.generator, resolve=True) == world


def test_the_standalone_grpo_recipe_starts_from_the_main_jobs_adopted_settings() -> None:
    # Run alone, testbed_critic_grpo trains as the main job's GRPO stage does: the adopted lr
    # and KL, and a critic of the family the job's SFT stage trains.
    cfg = compose_recipe("demo")
    grpo = stage(cfg, "grpo")
    standalone = compose_recipe("testbed_critic_grpo")
    for key in ("trainer.lr", "trainer.kl_coef"):
        assert OmegaConf.select(standalone, key) == OmegaConf.select(grpo, key), key
    family = stage(cfg, "sft").prepare.vlm_config.family
    assert Path(standalone.critic.model_path).name == family

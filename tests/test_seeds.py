"""Figures across seeds: the two-level bootstrap on hand-computed cases, outcomes read back from
eval.json, and a study's per-seed resume with a stand-in for the main job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from itk_rl.demo import stage
from itk_rl.eval.metrics import (
    AttemptOutcome,
    EvalResult,
    StepOutcome,
    TaskOutcome,
    summarise,
    task_resamples,
)
from itk_rl.seeds import Study, load_outcomes, summarise_seeds, two_level_bootstrap


def _arrays(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """A per-step metric of one-step tasks: numerator the value, denominator 1."""
    return np.array(values, float), np.ones(len(values))


def test_seeds_whose_tasks_agree_give_the_spread_of_the_seeds() -> None:
    # Every task scores 1 under seed 0 and 3 under seed 1: resampling tasks changes nothing,
    # and the replicates are the means of two drawn seeds: 1, 2 or 3 (a quarter each end).
    runs = {0: _arrays([1.0] * 5), 1: _arrays([3.0] * 5)}
    result = two_level_bootstrap(runs, resamples=2000, seed=4)
    assert (result.value, result.low, result.high) == (2.0, 1.0, 3.0)
    assert result.seed_sd == pytest.approx(np.sqrt(2.0))
    assert [(e.value, e.low, e.high) for e in result.per_seed.values()] == [(1, 1, 1), (3, 3, 3)]


def test_the_bootstrap_is_deterministic_in_its_seed() -> None:
    rng = np.random.default_rng(0)
    runs = {s: _arrays(list(rng.uniform(0, 10, 30) + s)) for s in range(3)}
    first, again = two_level_bootstrap(runs, seed=1), two_level_bootstrap(runs, seed=1)
    other = two_level_bootstrap(runs, seed=2)
    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other.low, other.high)
    assert first.value == other.value == pytest.approx(np.mean([np.mean(runs[s][0]) for s in runs]))


def test_paired_differences_cancel_what_both_systems_share() -> None:
    # The SFT critic's scores vary a lot from task to task and seed to seed; GRPO scores 0.5
    # more on every task of every seed: the paired difference is 0.5 with no spread at all.
    rng = np.random.default_rng(1)
    sft = {s: _arrays(list(rng.uniform(0, 10, 20) + 2 * s)) for s in range(3)}
    grpo = {s: (num + 0.5, den) for s, (num, den) in sft.items()}
    difference = two_level_bootstrap(grpo, sft)
    assert (difference.value, difference.low, difference.high) == pytest.approx((0.5, 0.5, 0.5))
    for estimate in difference.per_seed.values():
        assert (estimate.value, estimate.low, estimate.high) == pytest.approx((0.5, 0.5, 0.5))
    alone = two_level_bootstrap(grpo)
    assert alone.high - alone.low > 2.0


def test_seed_variance_widens_the_interval_of_one_seed() -> None:
    rng = np.random.default_rng(2)
    tasks = list(rng.uniform(0, 10, 40))
    one = two_level_bootstrap({0: _arrays(tasks)})
    # The same run twice: the seeds share the task resample, so the interval is one seed's
    # exactly (resampling each seed's tasks apart would narrow it).
    same = two_level_bootstrap({0: _arrays(tasks), 1: _arrays(tasks)})
    assert (same.low, same.high) == pytest.approx((one.low, one.high))
    assert (one.low, one.high) == (one.per_seed[0].low, one.per_seed[0].high)
    # A second seed 2 points higher: the interval spans both seeds' levels.
    apart = two_level_bootstrap({0: _arrays(tasks), 1: _arrays([t + 2.0 for t in tasks])})
    assert apart.value == pytest.approx(np.mean(tasks) + 1.0)
    assert apart.high - apart.low > 1.5 * (one.high - one.low)
    assert apart.low < np.mean(tasks) + 0.2 and apart.high > np.mean(tasks) + 1.8


def _task(request: str, scores: list[float], review: str = "accepted") -> TaskOutcome:
    """A task of one-attempt steps; `review` is what the critic said of each (unreviewed: none)."""
    steps = tuple(
        StepOutcome((AttemptOutcome(score, score == 10.0, review, False),), 0, score == 10.0)
        for score in scores
    )
    return TaskOutcome(request, len(scores), steps, f"runs/{request}")


def _seed(offset: float) -> dict[str, tuple[TaskOutcome, ...]]:
    generator = (_task("a", [4.0, 6.0], "unreviewed"), _task("b", [2.0], "unreviewed"))
    critic = (_task("a", [4.0 + offset, 10.0]), _task("b", [2.0 + offset]))
    return {"generator_alone": generator, "sft_critic": critic}


def test_outcomes_read_back_from_eval_json_and_summarised_across_seeds(tmp_path: Path) -> None:
    resamples = task_resamples(2, 10)
    systems = tuple(summarise(n, "", tasks, resamples) for n, tasks in _seed(1.0).items())
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(EvalResult(systems, {}).to_dict()))
    assert load_outcomes(path) == _seed(1.0)

    pairs = [("sft_critic", "generator_alone")]
    summary = summarise_seeds({0: _seed(1.0), 1: _seed(3.0)}, list(_seed(0)), pairs)
    assert summary["seeds"] == [0, 1] and summary["tasks"] == 2
    # Score per step of the critic: (5 + 10 + 3) / 3 = 6 and (7 + 10 + 5) / 3 for the seeds.
    score = summary["systems"]["sft_critic"]["final_score"]
    assert score["per_seed"]["0"][0] == 6.0 and score["mean"] == pytest.approx(
        (6 + 22 / 3) / 2, abs=1e-4
    )
    # No critic, no verdicts: the figure is left out, not reported as 0.
    assert "verdict_accuracy" not in summary["systems"]["generator_alone"]
    difference = summary["differences"]["sft_critic - generator_alone"]["final_score"]
    assert difference["mean"] == pytest.approx((2 + 10 / 3) / 2, abs=1e-4)  # the generator scores 4

    shuffled = {**_seed(3.0), "sft_critic": _seed(3.0)["sft_critic"][::-1]}
    with pytest.raises(ValueError, match="seed 1, system 'sft_critic'"):
        summarise_seeds({0: _seed(1.0), 1: shuffled}, list(_seed(0)), pairs)


def test_a_study_runs_each_seed_once_sharing_one_data_build(tmp_path: Path) -> None:
    study = Study(tmp_path, data_seed=7, sft_overrides=("epochs=1",))
    study.record_settings()
    composed: list[DictConfig] = []

    def job(cfg: DictConfig) -> None:  # stands in for itk_rl.demo.run
        composed.append(cfg)
        Path(cfg.output_dir).mkdir()
        Path(cfg.output_dir, "figures.json").write_text("{}")

    assert study.run_seed(1, job) and study.run_seed(2, job)
    assert not study.run_seed(1, job)  # finished: not run again
    assert [cfg.seed for cfg in composed] == [1, 2]
    for cfg in composed:
        sft = stage(cfg, "sft")
        assert Path(sft.prepare.data_dir) == tmp_path / "data" and sft.epochs == 1
        assert "prompts.seed=7" in sft.prepare.data_overrides and sft.seed == cfg.seed
        grpo = stage(cfg, "grpo")
        assert Path(grpo.data.train_path).parent.parent == tmp_path / "data"
        assert Path(grpo.critic.model_path) == study.seed_dir(cfg.seed) / "critic_sft" / "final"

    with pytest.raises(ValueError, match=r"settings\.json records"):
        Study(tmp_path, data_seed=8).record_settings()

"""The benchmark scripts: the figures `critic_refinements.py` computes on hand-written critic
answers, and the world `testbed_eval.py` evaluates in."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from itk_rl.formats import CriticVerdict, format_critic_answer
from itk_rl.formats.records import CriticSample, Evaluation
from itk_rl.job import compose_recipe, plain
from itk_rl.rewards.critic import CriticReward
from itk_rl.seeds import Study
from itk_rl.testbed import TestbedGenerator, TestbedJudge
from itk_rl.testbed.render import render
from itk_rl.testbed.scene import Scene

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tally():
    return _script("critic_refinements").tally


def _failed_step() -> CriticSample:
    """Step 1 asked for a crimson disc on the left; the generator drew nothing."""
    blank = render(Scene.empty(), 48)
    return CriticSample(
        origin_prompt="draw a crimson disc on the left",
        rewritten_prompt="draw a crimson disc on the left",
        origin_image=blank,
        edited_image=blank,
        evaluation=Evaluation(semantics=0.0, quality=10.0, success=False),
        text_to_image=True,
    )


def test_refinements_are_counted_by_meaning_words_and_render(tally) -> None:
    def answer(success: bool, refine: str) -> str:
        return format_critic_answer(CriticVerdict(success, refine, "left none"))

    answers = [
        answer(False, "draw a red circle on the left"),  # canonical: means it, renders right
        answer(False, "draw a blue circle on the left"),  # core words, wrong colour
        answer(False, "draw a crimson disc on the left"),  # repeats the used prompt
        answer(True, ""),  # not a rejection: not counted below
        "no answer at all",  # unreadable: not a rejection either
    ]
    figures = tally(
        [_failed_step()], [answers], TestbedGenerator(misrender_prob=1.0), TestbedJudge()
    )
    assert figures["records"] == 1 and figures["answers"] == 5
    assert figures["says_failed"] == pytest.approx(3 / 5)
    assert figures["meaning_right"] == pytest.approx(2 / 3)  # the canonical one and the repeat
    assert figures["core_words_only"] == pytest.approx(2 / 3)
    assert figures["repeats_used_prompt"] == pytest.approx(1 / 3)
    # misrender_prob 1: only the core-word rewrite with the right meaning renders right.
    assert figures["renders_right"] == pytest.approx(1 / 3)
    # SC_old is 0, so no re-render can lose (sem >= 0.5); the canonical one earns 1.0 and the
    # wrong colour cannot reach full semantic consistency.
    assert np.mean([1.0, 0.5, 0.5]) <= figures["mean_sem"] < 1.0


def test_no_rejection_leaves_the_shares_undefined(tally) -> None:
    accept = format_critic_answer(CriticVerdict(True, "", "left none"))
    figures = tally([_failed_step()], [[accept]], TestbedGenerator(), TestbedJudge())
    assert figures["says_failed"] == 0.0
    assert figures["meaning_right"] is None and figures["mean_sem"] is None


def test_testbed_eval_renders_in_the_main_jobs_world_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The generator the benchmark hands to the evaluation, caught on its way in.
    module = _script("testbed_eval")
    evaluated = []

    def evaluate(systems, tasks, generator, *args, **kwargs):
        evaluated.append((list(systems), generator))
        return real(systems, tasks, generator, *args, **kwargs)

    real = module.evaluate_testbed
    monkeypatch.setattr(module, "evaluate_testbed", evaluate)
    world = plain(compose_recipe("demo").world)
    module.main(["--tasks", "2", "--no-oracle", "--out", str(tmp_path / "job")])
    ((systems, generator),) = evaluated
    assert systems == ["generator_alone"]
    assert world["_target_"] == "itk_rl.testbed.TestbedGenerator"
    assert isinstance(generator, TestbedGenerator)
    assert vars(generator) == {key: value for key, value in world.items() if key != "_target_"}
    figures = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert figures["generator"] == world and figures["tasks"] == 2

    other = ["--tasks", "1", "--no-oracle", "--out", str(tmp_path / "other")]
    module.main([*other, "world.misrender_prob=1.0"])
    assert evaluated[-1][1].misrender_prob == 1.0 != world["misrender_prob"]


def test_the_ablation_table_has_a_row_per_system_run_and_its_paired_differences() -> None:
    """Rows only for the systems summarised (a variant not run is left out, not shown empty);
    each cell the across-seed mean and interval; differences signed, '—' where not paired."""
    table = _script("ablation").table

    def figure(mean: float, low: float, high: float) -> dict:
        return {"mean": mean, "interval": [low, high]}

    scores = {"final_score": figure(5.5, 5.0, 6.0), "scene_accuracy": figure(0.3, 0.2, 0.4)}
    summary = {
        "seeds": [0, 1, 2],
        "tasks": 200,
        "systems": {name: scores for name in ("generator_alone", "sft_critic", "grpo_critic")}
        | {"grpo_staleness1": {"final_score": figure(5.25, 4.5, 6.0)}},
        "differences": {
            "grpo_staleness1 - grpo_critic": {"final_score": figure(-0.25, -0.5, 0.1)},
            "grpo_critic - sft_critic": {"final_score": figure(0.5, -0.25, 1.0)},
        },
    }
    lines = table(summary).splitlines()
    rows = [line for line in lines if line.startswith("| ") and "system" not in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| generator alone",
        "| SFT critic",
        "| GRPO, full reward (T_max 3)",
        "| GRPO, full reward, max_staleness 1",
    ]
    staleness = rows[-1].split(" | ")
    assert staleness[1] == "5.25 [4.50, 6.00]" and staleness[2] == "—"
    assert staleness[-3] == "-0.25 [-0.50, 0.10]"  # − full GRPO, score per step
    assert rows[2].split(" | ")[-1].rstrip(" |") == "+0.50 [-0.25, 1.00]"
    assert "Seeds 0, 1, 2; 200 held-out tasks" in lines[0]


def test_the_training_summary_compares_the_first_and_last_steps_of_each_run(
    tmp_path: Path,
) -> None:
    """Each end is the mean of its window in step order (the log's line order does not
    matter); the update's groups with signal are its groups less the zero-variance ones; a
    figure no step logged is left out; a log shorter than two windows is refused."""
    ablation = _script("ablation")
    records = [
        {
            "step": step,
            "reward/total": 0.5 + 0.01 * step,
            "data/groups": 16.0,
            "data/zero_variance_groups": 8.0 if step <= 20 else 2.0,
        }
        for step in range(100, 0, -1)
    ]
    ends = ablation.training_ends(records)
    assert ends["reward/total"]["first"] == pytest.approx(0.5 + 0.01 * 10.5)
    assert ends["reward/total"]["last"] == pytest.approx(0.5 + 0.01 * 90.5)
    assert ends["groups_trained_with_signal"] == {"first": 8.0, "last": 14.0}
    assert "actor/kl" not in ends
    with pytest.raises(ValueError, match="39 logged steps"):
        ablation.training_ends(records[:39])
    run = {"seeds": {0: ends, 1: ends}, "mean": ends}
    row = ablation.training_table({"grpo_critic": run}).splitlines()[-1].split(" | ")
    assert row[0] == "| GRPO, full reward (T_max 3)"
    assert row[1] == "0.605 → 1.405 (0.605 → 1.405, 0.605 → 1.405)"
    assert row[4] == "8.0 → 14.0 (8.0 → 14.0, 8.0 → 14.0)"
    assert row[5].rstrip(" |") == "—"
    # A run's log too short to summarise is named in the error.
    log = tmp_path / "seed_0" / "critic_grpo" / "metrics.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("\n".join(json.dumps(r) for r in records[:10]))
    study = Study(tmp_path, data_seed=0)
    with pytest.raises(ValueError, match=re.escape(f"{log}: 10 logged steps")):
        ablation.training_summary(study, [0], ["grpo_critic"])


def test_the_reward_headroom_of_reference_critics_follows_the_reward() -> None:
    """With the right verdict, the core-word rewrite of a failed step renders right (semantics
    0 → 10, quality kept): 0.5 + 0.5·(0.2 + 0.8·(0.75·1 + 0.25·0.5)) = 0.95; a re-roll of the
    misrendered prompt earns less; a right "success" earns 0.8 and a wrong verdict loses the
    accuracy term."""
    headroom = _script("reward_headroom").headroom
    failed = _failed_step()
    succeeded = CriticSample(
        origin_prompt="draw a red circle on the left",
        rewritten_prompt="draw a red circle on the left",
        origin_image=failed.origin_image,
        edited_image=failed.origin_image,
        evaluation=Evaluation(semantics=10.0, quality=10.0, success=True),
        text_to_image=True,
    )
    generator = TestbedGenerator(misrender_prob=1.0, artifact_prob=0.0)
    critics = headroom([failed, succeeded], generator, CriticReward(), draws=2, seed=0)
    assert critics["core_words"]["failed"]["total"] == pytest.approx(0.95)
    assert critics["core_words"]["success"]["total"] == pytest.approx(0.8)
    assert critics["re_roll"]["failed"]["total"] < 0.95
    assert critics["always_success"]["failed"]["accuracy"] == 0.0
    reroll_step = critics["re_roll"]["failed"]["step"]
    assert critics["always_success"]["failed"]["total"] == pytest.approx(0.5 + 0.4 * reroll_step)
    assert critics["always_failed"]["success"]["total"] == pytest.approx(0.7)
    assert critics["core_words"]["all"]["total"] == pytest.approx((0.95 + 0.8) / 2)

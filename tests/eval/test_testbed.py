"""The held-out evaluation and its report: structure, held-out requests, metric definitions.

Numbers of trained critics are not asserted; only what must hold by construction: the oracle
critic beats rendering each step once on synonym-heavy tasks, and a random-weight critic's junk
is counted as parse failures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from itk_rl.eval.heldout import HELDOUT_SEED, check_heldout, heldout_tasks
from itk_rl.eval.metrics import COMPARISON_METRICS, METRICS, EvalResult, bootstrap_ratio
from itk_rl.eval.report import write_report
from itk_rl.eval.testbed import (
    SystemSpec,
    _sees_right,
    checkpoint_critic,
    evaluate_testbed,
    oracle_critic,
    run_pipelines,
)
from itk_rl.formats import Attempt, Trajectory, parse_critic_output
from itk_rl.testbed import TaskSampler, TestbedGenerator, TestbedJudge
from itk_rl.testbed.render import ARTIFACT_NOTE, add_smudge, render
from itk_rl.testbed.scene import Scene, ShapeObject, describe

NUM_TASKS = 4


@pytest.fixture(scope="module")
def evaluated(tiny_models, tmp_path_factory) -> tuple[Path, EvalResult, Path]:
    """Generator alone, a random-weight critic and the oracle on synonym-heavy held-out tasks,
    reported with one real-looking training curve and one missing file."""
    out = tmp_path_factory.mktemp("eval")
    tasks = heldout_tasks(NUM_TASKS, synonym_rate=1.0)
    systems = {
        "generator_alone": SystemSpec(description="none"),
        "tiny": SystemSpec(checkpoint_critic(tiny_models.qwen2_5_vl, max_new_tokens=8), "random"),
        "oracle": SystemSpec(oracle_critic(), "oracle", compare_with="tiny"),
    }
    generator = TestbedGenerator(misrender_prob=1.0)
    result = evaluate_testbed(systems, tasks, generator, TestbedJudge(), out, seed=3)
    metrics = out / "metrics.jsonl"
    lines = [{"step": s, "sft/loss": 1 / s, "eval/loss": 1.1 / s} for s in range(1, 6)]
    lines += [{"step": 6, "reward/total": 0.4, "reward/verdict_accuracy": 0.6}]
    metrics.write_text("\n".join(json.dumps(line) for line in lines) + "\n{broken")
    page = write_report(out, result, {"sft": metrics, "grpo": out / "missing.jsonl"})
    return out, result, page


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.rows = 0
        self._in_comparison = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.links += [v for k, v in attrs if k in ("href", "src") and v]
        if tag == "table":
            self._in_comparison = values.get("class") == "comparison"
        if tag == "tr" and self._in_comparison:
            self.rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_comparison = False


def test_report_structure(evaluated) -> None:
    out, result, page = evaluated
    assert page == out / "report" / "index.html" and page.is_file()
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    assert parser.rows == 1 + len(result.systems)  # header + one row per system
    assert parser.links, "the page links nothing"
    for link in parser.links:
        assert (page.parent / link).resolve().is_file(), link
    runs = [link for link in parser.links if link.endswith("/index.html")]
    assert len(runs) >= 2 * len(result.systems)  # examples: each system's run pages
    for png in ("comparison.png", "curves_sft.png"):
        with Image.open(page.parent / png) as image:
            image.verify()
            assert image.format == "PNG"
    assert not (page.parent / "curves_grpo.png").exists()
    assert "no curves in" in page.read_text(encoding="utf-8")
    assert "cannot show that training helps" in page.read_text(encoding="utf-8")
    saved = json.loads((page.parent / "eval.json").read_text())
    assert [s["name"] for s in saved["systems"]] == ["generator_alone", "tiny", "oracle"]


def test_metrics_have_cis_containing_the_estimate(evaluated) -> None:
    _, result, _ = evaluated
    for system in result.systems:
        assert set(system.metrics) == set(METRICS)
        for name, estimate in [*system.metrics.items(), *system.deltas.items()]:
            if estimate.value is None:
                assert estimate.low is None and estimate.high is None, name
                continue
            assert estimate.low <= estimate.value <= estimate.high, (system.name, name)
        assert system.counts["tasks"] == NUM_TASKS
        assert system.counts["steps"] == sum(t.num_steps for t in system.tasks)
    assert not result.systems[0].deltas and set(result.systems[1].deltas)


def test_a_critic_compared_with_another_gets_paired_differences(evaluated) -> None:
    _, result, page = evaluated
    tiny, oracle = result.systems[1], result.systems[2]
    assert not tiny.comparison and oracle.compared_with == "tiny"
    assert set(oracle.comparison) == set(COMPARISON_METRICS)
    for metric, estimate in oracle.comparison.items():
        mine, theirs = oracle.metrics[metric].value, tiny.metrics[metric].value
        if mine is None or theirs is None:
            assert estimate.value is None, metric
        else:
            assert estimate.value == pytest.approx(mine - theirs), metric
            assert estimate.low <= estimate.value <= estimate.high, metric
    assert result.figures()["oracle"]["vs_tiny/final_score"][0] == pytest.approx(
        oracle.comparison["final_score"].value, abs=1e-4
    )
    assert "Δ final_score vs tiny" in page.read_text()


def test_compare_with_must_name_an_earlier_system(tmp_path) -> None:
    systems = {
        "oracle": SystemSpec(oracle_critic(), "oracle", compare_with="later"),
        "later": SystemSpec(oracle_critic(), "oracle"),
    }
    with pytest.raises(ValueError, match="compare_with='later' must name a system listed before"):
        evaluate_testbed(systems, heldout_tasks(1), TestbedGenerator(), TestbedJudge(), tmp_path)


def test_random_critic_junk_counts_as_parse_failures(evaluated) -> None:
    tiny = evaluated[1].systems[1]
    assert tiny.counts["critic_calls"] > 0
    assert tiny.counts["parse_failures"] == tiny.counts["critic_calls"]
    assert tiny.metrics["verdict_accuracy"].value == 0.0  # unreadable verdicts are wrong
    assert tiny.metrics["reasoning_accuracy"].value == 0.0


def test_oracle_critic_beats_generator_alone_on_synonym_heavy_tasks(evaluated) -> None:
    alone, _, oracle = evaluated[1].systems
    assert alone.counts["refinements"] == 0 and alone.metrics["improvement_rate"].value is None
    assert oracle.counts["refinements"] > 0
    assert oracle.metrics["improvement_rate"].value > 0
    for metric in ("final_score", "scene_accuracy", "steps_improved"):
        assert oracle.metrics[metric].value >= alone.metrics[metric].value, metric
    assert oracle.metrics["final_score"].value > alone.metrics["final_score"].value
    assert oracle.metrics["reasoning_accuracy"].value == 1.0  # it quotes `describe_image`


def test_reasoning_is_right_only_when_it_states_the_image_as_it_is() -> None:
    scene = Scene((None, ShapeObject("square", "red", "large"), None))
    clean = render(scene)
    smudged = add_smudge(clean, 3, np.random.default_rng(0))
    text = describe(scene)

    def sees(image: np.ndarray, think: str) -> bool:
        verdict = parse_critic_output(
            f'<think>{think}</think><answer>{{"previous_step_success": true, '
            '"refine_prompt": ""}</answer>'
        )
        return _sees_right(Attempt(prompt="p", seed=0, image=image, critic=verdict))

    assert sees(clean, text) and sees(smudged, f"{text}; {ARTIFACT_NOTE}")
    assert sees(clean, f"I see: {text}. Expected: something else.")
    assert not sees(smudged, text)  # the smudge is missed
    assert not sees(clean, f"{text}; {ARTIFACT_NOTE}")  # a smudge that is not there
    assert not sees(clean, text.replace("centre large red square", "centre small red square"))
    assert not sees(clean, f"left small blue circle; {text}")
    assert not _sees_right(Attempt(prompt="p", seed=0, image=clean))  # no critic asked


def test_evaluation_runs_the_heldout_requests(evaluated) -> None:
    out, result, _ = evaluated
    expected = [task.request for task in heldout_tasks(NUM_TASKS, synonym_rate=1.0)]
    for system in result.systems:
        assert [task.request for task in system.tasks] == expected
        for task in system.tasks:
            data = json.loads((out / task.run / "trajectory.json").read_text())
            run = Trajectory.from_json_dict(data, out / task.run / "images")
            assert run.request.text == task.request
            assert all(a.score is not None for s in run.steps for a in s.attempts)


def test_heldout_tasks_never_overlap_training(tmp_path: Path) -> None:
    tasks = heldout_tasks(30)
    training = [t.request for t in TaskSampler(seed=0, synonym_rate=0.5).sample(300)]
    training += [t.request for t in TaskSampler(seed=1, synonym_rate=0.3).sample(300)]
    check_heldout(tasks, training)  # the held-out seed is disjoint, and colliding ones skipped
    leaked = [tasks[3].request, tasks[7].request, "unrelated"]
    with pytest.raises(ValueError, match="2 of 30 held-out requests"):
        check_heldout(tasks, leaked)
    parquet = tmp_path / "train.parquet"
    pq.write_table(pa.table({"origin_prompt": leaked, "target": ["x"] * 3}), parquet)
    with pytest.raises(ValueError, match=f"2 of 30 held-out requests appear in {parquet}"):
        check_heldout(tasks, parquet)
    fresh = heldout_tasks(30, exclude=leaked)
    assert not {t.request for t in fresh} & set(leaked)
    check_heldout(fresh, parquet)
    assert len({t.request for t in fresh}) == 30
    assert HELDOUT_SEED not in (0, 1)


def test_bootstrap_ratio_by_hand() -> None:
    num, den = np.array([1.0, 3.0, 0.0]), np.array([2.0, 4.0, 0.0])
    all_tasks = np.array([[0, 1, 2]])
    estimate = bootstrap_ratio(num, den, np.repeat(all_tasks, 5, axis=0))
    assert estimate.value == pytest.approx(4 / 6) and estimate.n == 6
    assert estimate.low == estimate.high == pytest.approx(4 / 6)
    only_first = np.array([[0, 0, 0], [1, 1, 1]])
    estimate = bootstrap_ratio(num, den, only_first)
    assert estimate.low == pytest.approx(0.5 + 0.025 * 0.25)
    assert estimate.high == pytest.approx(0.75 - 0.025 * 0.25)
    paired = bootstrap_ratio(num, den, only_first, base=(num / 2, den))
    assert paired.value == pytest.approx(2 / 6)
    empty = bootstrap_ratio(np.zeros(2), np.zeros(2), np.array([[0, 1]]))
    assert empty.value is None and empty.n == 0


def _attempts(runs: Iterable[tuple[Trajectory, str | None]]) -> list[tuple]:
    return [
        (a.prompt, a.seed, a.critic.raw if a.critic else None, a.image.tobytes(), error)
        for trajectory, error in runs
        for step in trajectory.steps
        for a in step.attempts
    ]


def test_concurrent_tasks_batch_critic_calls_without_changing_any_run():
    tasks = heldout_tasks(5, synonym_rate=1.0)
    generator = TestbedGenerator(misrender_prob=1.0)
    spec = SystemSpec(oracle_critic())
    one_by_one = list(run_pipelines(spec, tasks, generator, seed=3, concurrent_tasks=1))
    in_threes = list(run_pipelines(spec, tasks, generator, seed=3, concurrent_tasks=3))
    assert len(_attempts(one_by_one)) > len(tasks)  # the critic sent some steps back
    assert _attempts(in_threes) == _attempts(one_by_one)
    with pytest.raises(ValueError, match="concurrent_tasks"):
        next(run_pipelines(spec, tasks, generator, seed=3, concurrent_tasks=0))

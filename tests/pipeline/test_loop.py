"""The inference loop on the testbed: critic on/off, baselines, T_max and the last-attempt rule,
seeds, and failures that are retried, recorded and never skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itk_rl.formats import Request, Trajectory, format_critic_answer
from itk_rl.formats.critic import CriticVerdict
from itk_rl.interfaces.engine import Completion
from itk_rl.pipeline.loop import (
    CRITIC,
    Agent,
    InterleavePipeline,
    PlannerOutputError,
    StepFailedError,
    seed_for,
)
from itk_rl.pipeline.run_folder import RunFolder, read_status, run_into_folder
from itk_rl.testbed import TaskSampler, TestbedGenerator, TestbedJudge
from itk_rl.testbed.agents import TestbedOracleCritic, TestbedScriptedPlanner


class ScriptedEngine:
    """A test-local `VLMEngine`: answers from a function of the request, and records calls."""

    def __init__(self, respond):
        self.respond = respond
        self.calls = []

    def generate(self, requests, params):
        self.calls.extend(requests)
        return [[Completion(self.respond(r))] * params.n for r in requests]


def always(success: bool, refine: str = "draw a red circle on the left"):
    verdict = CriticVerdict(success, "" if success else refine, "scripted")
    return ScriptedEngine(lambda request: format_critic_answer(verdict))


def planner() -> Agent:
    return Agent(TestbedScriptedPlanner("planner"), "planner")


def oracle() -> Agent:
    return Agent(TestbedOracleCritic("critic_testbed"), "critic_testbed")


def pipeline(critic=None, generator=None, **kwargs) -> InterleavePipeline:
    generator = generator or TestbedGenerator(misrender_prob=1.0)
    return InterleavePipeline(generator, planner(), critic, **kwargs)


def final_scores(trajectory: Trajectory) -> list[float]:
    """The judge's overall score of every step's final image against the planner's prompt."""
    judge, before, scores = TestbedJudge(), None, []
    for record in trajectory.steps:
        image = record.final.image
        scores.append(judge.score(record.step.prompt, image, before).overall)
        before = image
    return scores


TASKS = TaskSampler(seed=5, synonym_rate=1.0, min_steps=2, max_steps=3).sample(6)


def test_critic_rerenders_misrendered_steps_and_ends_up_better():
    with_critic, without = pipeline(oracle()), pipeline(None)
    on, off, rerendered = [], [], 0
    for task in TASKS:
        request = Request(task.request)
        traj_on, traj_off = with_critic.run(request), without.run(request)
        on += final_scores(traj_on)
        off += final_scores(traj_off)
        rerendered += sum(len(r.attempts) > 1 for r in traj_on.steps)
        # Without a critic nothing is ever re-rendered or reviewed.
        assert all(len(r.attempts) == 1 and r.attempts[0].critic is None for r in traj_off.steps)
        # With it, rejected attempts are followed by one rendered from the refined prompt.
        for record in traj_on.steps:
            for attempt, following in zip(record.attempts, record.attempts[1:], strict=False):
                assert attempt.verdict.success is False
                assert following.prompt == attempt.verdict.refine_prompt
    assert rerendered > 0
    assert np.mean(on) > np.mean(off)
    assert np.mean(on) == 10.0  # the oracle's canonical refinements render right
    assert np.mean(off) < 5.0  # synonyms everywhere: the generator gets most steps wrong


def test_generator_only_baseline_renders_the_request_once():
    generator_only = InterleavePipeline(TestbedGenerator(), planner=None, critic=None)
    trajectory = generator_only.run(Request("draw a red circle on the left"))
    [record] = trajectory.steps
    assert record.step.prompt == "draw a red circle on the left"
    assert trajectory.planner_output == "" and len(record.attempts) == 1
    assert TestbedJudge().score(record.step.prompt, record.final.image).overall == 10.0


@pytest.mark.parametrize("unreviewed", [True, False])
@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_max_attempts_and_the_last_attempt_rule(max_attempts, unreviewed):
    engine = always(False)
    run = pipeline(
        Agent(engine, "critic_testbed"),
        max_attempts=max_attempts,
        accept_last_attempt_unreviewed=unreviewed,
    ).run(Request("Draw: draw a crimson disc on the left, then make the disc azure"))
    calls_per_step = max_attempts - 1 if unreviewed else max_attempts
    assert len(engine.calls) == calls_per_step * len(run.steps)
    for record in run.steps:
        assert len(record.attempts) == max_attempts
        assert record.final_attempt == max_attempts - 1  # all rejected: the last rendered one
        assert (record.attempts[-1].critic is None) == unreviewed
        # Every critic call sees the before-image and the attempt's own render.
    first_call = engine.calls[0] if engine.calls else None
    if first_call is not None:
        assert first_call.images[0].min() == 255  # white canvas before step 1
        np.testing.assert_array_equal(first_call.images[1], run.steps[0].attempts[0].image)


def test_an_accepted_attempt_ends_the_step():
    engine = always(True)
    run = pipeline(Agent(engine, "critic_testbed"), max_attempts=5).run(Request(TASKS[0].request))
    assert all(len(r.attempts) == 1 and r.final_attempt == 0 for r in run.steps)
    assert len(engine.calls) == len(run.steps)


def test_seeds_are_deterministic_per_step_and_attempt():
    engine = always(False)
    request = Request(TASKS[1].request)
    first = pipeline(Agent(engine, "critic_testbed"), seed=7).run(request)
    second = pipeline(Agent(always(False), "critic_testbed"), seed=7).run(request)
    seeds = [[a.seed for a in r.attempts] for r in first.steps]
    assert seeds == [[a.seed for a in r.attempts] for r in second.steps]
    assert seeds == [
        [seed_for(7, r.step.step_number, i) for i in range(len(r.attempts))] for r in first.steps
    ]
    flat = [s for row in seeds for s in row]
    assert len(set(flat)) == len(flat)
    for one, two in zip(first.steps, second.steps, strict=True):
        for a, b in zip(one.attempts, two.attempts, strict=True):
            np.testing.assert_array_equal(a.image, b.image)
    critic_seeds = [call.seed for call in engine.calls]
    assert critic_seeds[0] == seed_for(7, 1, 0, CRITIC)
    other = pipeline(Agent(always(False), "critic_testbed"), seed=8).run(request)
    assert [a.seed for a in other.steps[0].attempts] != seeds[0]


class FailingOnEdits:
    """Renders step 1 (text-to-image), raises on every edit: a generator broken on step 2."""

    def __init__(self, exc: BaseException | None = None):
        self.inner, self.calls = TestbedGenerator(), 0
        self.exc = exc or RuntimeError("out of memory")

    def __call__(self, requests):
        self.calls += 1
        if requests[0].references:
            raise self.exc
        return self.inner(requests)


def test_a_step_without_any_image_stops_the_run_and_keeps_what_was_done(tmp_path):
    generator = FailingOnEdits()
    run = pipeline(oracle(), generator, max_attempts=2, retries=1)
    folder = RunFolder(tmp_path / "run", TASKS[0].request)
    with pytest.raises(StepFailedError, match="step 2 of") as caught:
        run_into_folder(run, Request(TASKS[0].request), folder)
    assert caught.value.step == 2
    data = json.loads((tmp_path / "run" / "trajectory.json").read_text())
    stored = Trajectory.from_json_dict(data, tmp_path / "run" / "images")
    assert stored.steps[0].final.image is not None
    failed = stored.steps[1]
    assert failed.final is None and len(failed.attempts) == 2
    assert all("out of memory" in a.error and "after 2 tries" in a.error for a in failed.attempts)
    status = read_status(tmp_path / "run")
    assert status.state == "stopped" and status.step == 2
    page = (tmp_path / "run" / "index.html").read_text()
    assert "stopped at step 2 of" in page and "out of memory" in page


def test_an_interrupted_run_says_where_it_stopped(tmp_path):
    run = pipeline(oracle(), FailingOnEdits(KeyboardInterrupt()))
    folder = RunFolder(tmp_path / "run", TASKS[0].request)
    with pytest.raises(KeyboardInterrupt):
        run_into_folder(run, Request(TASKS[0].request), folder)
    status = read_status(tmp_path / "run")
    assert status.state == "stopped" and status.message.startswith("stopped at step 2 of")
    assert "interrupted" in (tmp_path / "run" / "index.html").read_text()


def test_a_transient_failure_is_retried_and_a_persistent_one_recorded():
    class FlakyOnce:
        def __init__(self):
            self.inner, self.calls = TestbedGenerator(), 0

        def __call__(self, requests):
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("busy")
            return self.inner(requests)

    retried = InterleavePipeline(FlakyOnce(), retries=1).run(
        Request("draw a red circle on the left")
    )
    assert retried.steps[0].attempts[0].error is None
    recorded = InterleavePipeline(FlakyOnce(), retries=0, max_attempts=2).run(
        Request("draw a red circle on the left")
    )
    first, second = recorded.steps[0].attempts
    assert "ConnectionError: busy" in first.error and first.image is None
    assert second.image is not None and recorded.steps[0].final_attempt == 1


def test_a_failing_critic_is_recorded_and_the_attempt_kept():
    def broken(request):
        raise TimeoutError("critic server down")

    engine = ScriptedEngine(broken)
    run = pipeline(Agent(engine, "critic_testbed"), retries=2).run(Request(TASKS[0].request))
    assert len(engine.calls) == 3 * len(run.steps)
    for record in run.steps:
        [attempt] = record.attempts
        assert "critic failed: TimeoutError: critic server down" in attempt.error
        assert attempt.image is not None and record.final_attempt == 0


def test_unreadable_critic_output_keeps_the_attempt():
    run = pipeline(Agent(ScriptedEngine(lambda r: "no idea"), "critic_testbed")).run(
        Request(TASKS[0].request)
    )
    for record in run.steps:
        [attempt] = record.attempts
        assert attempt.critic.value is None and attempt.critic.raw == "no idea"


def test_hopeless_planner_output_is_saved_and_the_error_names_the_file(tmp_path):
    junk = '<think>hmm</think><answer>{"execution_plan": []}</answer> and then some'
    run = InterleavePipeline(
        TestbedGenerator(), planner=Agent(ScriptedEngine(lambda r: junk), "planner")
    )
    folder = RunFolder(tmp_path / "run", "anything")
    with pytest.raises(PlannerOutputError) as caught:
        run_into_folder(run, Request("anything"), folder)
    saved = tmp_path / "run" / "planner_output.txt"
    assert str(saved) in str(caught.value) and saved.read_text() == junk
    assert read_status(tmp_path / "run").state == "stopped"
    assert "no usable steps" in (tmp_path / "run" / "index.html").read_text()


def test_a_template_of_the_wrong_role_is_refused():
    with pytest.raises(ValueError, match="expected a critic one"):
        InterleavePipeline(TestbedGenerator(), critic=Agent(always(True), "planner"))
    with pytest.raises(ValueError, match="max_attempts"):
        InterleavePipeline(TestbedGenerator(), max_attempts=0)

"""Judges: the VLM judge's prompts, min rules and unreadable answers; the shared call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from itk_rl.formats.score import JudgeScore
from itk_rl.formats.templates import load_template
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.interfaces.judge import Judge
from itk_rl.rewards.judges import VLMJudge, parse_judge_answer
from itk_rl.testbed.judge import TestbedJudge
from itk_rl.testbed.render import render
from itk_rl.testbed.scene import Scene, ShapeObject

BEFORE = np.full((8, 8, 3), 255, dtype=np.uint8)
AFTER = np.zeros((8, 8, 3), dtype=np.uint8)


class ScriptedEngine:
    """A stand-in VLM engine for tests: answers each request by the first matching keyword of
    its system text, and records what it was asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = {key: list(texts) for key, texts in answers.items()}
        self.calls: list[tuple[list[ChatRequest], SamplingParams]] = []

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        self.calls.append((list(requests), params))
        out = []
        for request in requests:
            system = request.messages[0]["content"][0]["text"]
            key = next(k for k in self.answers if k in system)
            out.append([Completion(self.answers[key].pop(0))])
        return out


def answer(body: str) -> str:
    return f"<think>looking</think><answer>{body}</answer>"


def test_scores_are_the_min_of_their_parts_for_edits_and_text_to_image() -> None:
    engine = ScriptedEngine(
        {
            "edit_success": [answer('{"edit_success": 9, "over_editing": 4}')],
            "prompt_following": [answer('{"prompt_following": 7}')],
            "naturalness": [
                answer('{"naturalness": 6, "artifacts": 8}'),
                answer('{"naturalness": 10, "artifacts": 3.5}'),
            ],
        }
    )
    judge = VLMJudge(engine)
    scores = judge.score_batch(["make it red", "a red circle"], [AFTER, AFTER], [BEFORE, None])
    assert scores == [JudgeScore(4.0, 6.0), JudgeScore(7.0, 3.5)]

    [(requests, params)] = engine.calls
    assert params.temperature == 0.0 and params.n == 1
    edit_sc, edit_pq, t2i_sc, t2i_pq = requests
    # Edit SC sees (before, after) and the instruction; PQ sees the after-image alone.
    assert len(edit_sc.images) == 2
    assert edit_sc.images[0] is BEFORE and edit_sc.images[1] is AFTER
    assert edit_sc.messages[-1]["content"][-1]["text"] == "Edit instruction: make it red"
    assert len(edit_pq.images) == 1 and edit_pq.images[0] is AFTER
    assert "make it red" not in str(edit_pq.messages)
    assert len(t2i_sc.images) == 1 and "a red circle" in str(t2i_sc.messages)
    assert len(t2i_pq.images) == 1


def test_lenient_answers_are_repaired_and_noted() -> None:
    parsed = parse_judge_answer('{"naturalness": "7/10", "artifacts": 5,}', ("naturalness",))
    assert parsed.value == {"naturalness": 7.0}
    assert not parsed.format_valid
    assert any("read as 7" in note for note in parsed.repairs)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"naturalness": 6}', "no artifacts"),
        ('{"naturalness": 6, "artifacts": 11}', "artifacts must be a number from 0 to 10"),
        ('{"naturalness": 6, "artifacts": "good"}', "artifacts must be a number"),
        ('{"naturalness": true, "artifacts": 5}', "naturalness must be a number"),
        ("the image looks fine", "no JSON object"),
    ],
)
def test_unreadable_answers_are_not_guessed(body: str, error: str) -> None:
    parsed = parse_judge_answer(answer(body), ("naturalness", "artifacts"))
    assert parsed.value is None
    assert error in (parsed.error or "")


def test_an_unreadable_judgement_is_none_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    engine = ScriptedEngine(
        {
            "prompt_following": [answer('{"prompt_following": 8}')] * 2,
            "naturalness": [
                answer('{"naturalness": 5}'),
                answer('{"naturalness": 5, "artifacts": 6}'),
            ],
        }
    )
    judge = VLMJudge(engine)
    with caplog.at_level(logging.WARNING, logger="itk_rl.rewards.judges"):
        judgements = judge.judge_batch(["a", "b"], [AFTER, AFTER])
    assert [j.score for j in judgements] == [None, JudgeScore(8.0, 5.0)]
    assert judgements[0].semantics.value == {"prompt_following": 8.0}
    assert "no artifacts" in (judgements[0].quality.error or "")
    assert "unreadable quality judgement for item 0" in caplog.text


def test_bad_inputs_name_the_item() -> None:
    judge = VLMJudge(ScriptedEngine({}))
    with pytest.raises(ValueError, match="equal lengths"):
        judge.score_batch(["a", "b"], [AFTER], [None])
    with pytest.raises(ValueError, match=r"befores\[0\]"):
        judge.score_batch(["a"], [AFTER], [np.zeros((8, 8), dtype=np.uint8)])
    assert judge.score_batch([], [], []) == []


def test_packaged_judge_templates_and_their_roles(tmp_path: Path) -> None:
    roles = {
        name: load_template(name).role
        for name in ("judge_edit", "judge_text_to_image", "judge_quality")
    }
    assert roles == {
        "judge_edit": "judge_semantics",
        "judge_text_to_image": "judge_semantics",
        "judge_quality": "judge_quality",
    }
    # PQ is judged on the image alone: a quality template may not see the instruction.
    leaky = tmp_path / "leaky.txt"
    leaky.write_text("role: judge_quality\n=== system ===\nx\n=== user ===\n$instruction\n")
    with pytest.raises(ValueError, match=r"unknown placeholder \$instruction"):
        load_template(leaky)
    blind = tmp_path / "blind.txt"
    blind.write_text("role: judge_semantics\n=== system ===\nx\n=== user ===\nrate it\n")
    with pytest.raises(ValueError, match=r"missing required placeholder \$instruction"):
        load_template(blind)
    # A template of the wrong role is refused where it is plugged in.
    with pytest.raises(ValueError, match="expected 'judge_semantics'"):
        VLMJudge(ScriptedEngine({}), edit_template="judge_quality")


def test_testbed_and_vlm_judges_satisfy_the_same_call() -> None:
    red_circle = render(Scene.of(left=ShapeObject("circle", "red", "large")))
    engine = ScriptedEngine(
        {
            "prompt_following": [answer('{"prompt_following": 10}')],
            "naturalness": [answer('{"naturalness": 10, "artifacts": 10}')],
        }
    )
    judges: list[Judge] = [TestbedJudge(), VLMJudge(engine)]
    for judge in judges:
        assert isinstance(judge, Judge)
        [score] = judge.score_batch(["draw a large red circle on the left"], [red_circle], [None])
        assert score == JudgeScore(10.0, 10.0)

"""Critic GRPO rewards against hand-computed numbers, one test per branch of DESIGN §1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itk_rl.formats import (
    CriticSample,
    CriticVerdict,
    Evaluation,
    format_critic_answer,
    parse_critic_output,
)
from itk_rl.formats.score import JudgeScore
from itk_rl.rewards.critic import (
    CriticReward,
    RewardInputs,
    RewardOutput,
    accuracy_reward,
    format_reward,
    needs_render,
    refined_prompt_to_render,
    stepwise_reward,
)

IMAGE = np.full((8, 8, 3), 255, dtype=np.uint8)


def sample(success: bool, semantics: float = 4.0, quality: float = 8.0) -> CriticSample:
    return CriticSample(
        origin_prompt="draw a red circle on the left",
        rewritten_prompt="draw a crimson disc on the left",
        origin_image=IMAGE,
        edited_image=IMAGE,
        evaluation=Evaluation(semantics, quality, success),
        text_to_image=True,
    )


def response(success: bool, refine: str = "") -> str:
    return format_critic_answer(CriticVerdict(success, refine, "the disc is blue"))


def test_format_reward_is_the_parsers_strict_criterion() -> None:
    assert format_reward(parse_critic_output(response(False, "draw a red circle"))) == 1.0
    answer = json.dumps({"previous_step_success": False, "refine_prompt": "x"})
    assert format_reward(parse_critic_output(f"<answer>{answer}</answer>")) == 0.0  # no think
    stringly = '<think>t</think><answer>{"previous_step_success": "false", "refine_prompt": ""}'
    assert format_reward(parse_critic_output(stringly + "</answer>")) == 0.0  # not a bool
    assert format_reward(parse_critic_output("no tags at all")) == 0.0


def test_accuracy_reward_compares_the_verdict_with_the_label() -> None:
    assert accuracy_reward(parse_critic_output(response(False)), sample(False)) == 1.0
    assert accuracy_reward(parse_critic_output(response(True)), sample(False)) == 0.0
    assert accuracy_reward(parse_critic_output(response(True)), sample(True)) == 1.0
    # Repaired but readable: the verdict counts, the format does not.
    repaired = parse_critic_output(response(True) + " trailing words")
    assert (format_reward(repaired), accuracy_reward(repaired, sample(True))) == (0.0, 1.0)
    # Unreadable verdict: accuracy 0 whatever the label.
    for label in (True, False):
        assert accuracy_reward(parse_critic_output("garbage"), sample(label)) == 0.0


def test_success_label_gives_half_and_needs_no_render() -> None:
    assert not needs_render(sample(True))
    assert stepwise_reward(sample(True), None) == (0.5, 0.5)
    assert stepwise_reward(sample(True), JudgeScore(0.0, 0.0)) == (0.5, 0.5)  # ignored


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (JudgeScore(10.0, 10.0), (0.8, 0.6)),  # better: SC 4→10, PQ 8→10
        (JudgeScore(0.0, 3.0), (0.3, 0.25)),  # worse: SC 4→0, PQ 8→3
        (JudgeScore(4.0, 8.0), (0.5, 0.5)),  # equal
    ],
)
def test_failed_label_rewards_the_gain_of_the_rerender(
    new: JudgeScore, expected: tuple[float, float]
) -> None:
    assert needs_render(sample(False))
    assert stepwise_reward(sample(False, 4.0, 8.0), new) == pytest.approx(expected)


def test_failed_label_without_a_rerender_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="rerender is None"):
        stepwise_reward(sample(False), None)
    with pytest.raises(ValueError, match=r"rerender\.semantics must be within 0–10"):
        stepwise_reward(sample(False), JudgeScore(11.0, 5.0))


def test_refined_prompt_falls_back_to_the_prompt_used_before() -> None:
    s = sample(False)
    assert refined_prompt_to_render(s, parse_critic_output(response(False, " a red circle "))) == (
        "a red circle"
    )
    assert refined_prompt_to_render(s, parse_critic_output(response(False, "  "))) == (
        s.rewritten_prompt
    )
    assert refined_prompt_to_render(s, parse_critic_output(response(True))) == s.rewritten_prompt
    assert refined_prompt_to_render(s, parse_critic_output("garbage")) == s.rewritten_prompt


def inputs(text: str, s: CriticSample, rerender: JudgeScore | None) -> RewardInputs:
    return RewardInputs(s, text, parse_critic_output(text), rerender)


def test_overall_at_defaults_matches_the_paper() -> None:
    # format 1, accuracy 1, SC 4→10 (sem 0.8), PQ 8→6 (qual 0.4):
    # 0.5·1 + 0.5·(0.2·1 + 0.6·0.8 + 0.2·0.4) = 0.5 + 0.5·0.76 = 0.88
    out = CriticReward()(inputs(response(False, "red circle"), sample(False), JudgeScore(10, 6)))
    assert isinstance(out, RewardOutput)
    assert out.total == pytest.approx(0.88)
    assert out.components == pytest.approx(
        {"format": 1.0, "accuracy": 1.0, "sem": 0.8, "qual": 0.4, "step": 0.7}
    )


def test_overall_for_a_wrong_verdict_on_a_success_label() -> None:
    # format 1, accuracy 0, sem = qual = 0.5: 0.5 + 0.5·(0 + 0.6·0.5 + 0.2·0.5) = 0.7
    out = CriticReward()(inputs(response(False, "x"), sample(True), None))
    assert out.total == pytest.approx(0.7)


def test_overall_for_an_unreadable_response() -> None:
    # format 0, accuracy 0, refinement falls back; SC 4→2 (0.4), PQ 8→8 (0.5):
    # 0.5·(0.6·0.4 + 0.2·0.5) = 0.17
    out = CriticReward()(inputs("I think it failed", sample(False), JudgeScore(2, 8)))
    assert (out.components["format"], out.components["accuracy"]) == (0.0, 0.0)
    assert out.total == pytest.approx(0.17)


def test_weights_are_parameters() -> None:
    x = inputs(response(False, "x"), sample(False), JudgeScore(10, 6))  # f 1, acc 1, .8, .4
    # Verdict-only: alpha = 1 ignores the step-wise term and needs no render.
    verdict_only = CriticReward(alpha=1.0)(inputs(response(True), sample(False), None))
    assert verdict_only.total == pytest.approx(0.5)
    assert set(verdict_only.components) == {"format", "accuracy"}
    # 0.2·1 + 0.8·(0.2·1 + 0.8·(0.5·0.8 + 0.5·0.4)) = 0.2 + 0.8·0.68 = 0.744
    out = CriticReward(format_weight=0.2, alpha=0.2, sem_share=0.5)(x)
    assert out.total == pytest.approx(0.744)
    with pytest.raises(ValueError, match="alpha must be within"):
        CriticReward(alpha=1.5)


def test_hydra_selects_the_reward() -> None:
    from hydra.utils import instantiate

    reward = instantiate({"_target_": "itk_rl.rewards.critic.CriticReward", "alpha": 1.0})
    assert reward(inputs(response(False), sample(False), None)).total == pytest.approx(1.0)

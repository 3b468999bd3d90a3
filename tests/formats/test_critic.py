"""Critic verdict parsing: strict outputs, repairable ones (with exact notes), hopeless ones."""

from __future__ import annotations

import pytest

from itk_rl.formats.critic import (
    CriticVerdict,
    build_critic_messages,
    format_critic_answer,
    parse_critic_output,
)
from itk_rl.formats.templates import load_template

THINK = "<think>The red circle is on the left, as asked.</think>"


def test_valid_output_is_format_valid() -> None:
    answer = '{"previous_step_success": false, "refine_prompt": "a red disc"}'
    text = f"{THINK}<answer>{answer}</answer>"
    result = parse_critic_output(text)
    assert result.format_valid
    assert result.repairs == ()
    assert result.error is None
    reasoning = "The red circle is on the left, as asked."
    assert result.value == CriticVerdict(False, "a red disc", reasoning)
    assert result.think == reasoning
    assert result.raw == text


def test_whitespace_between_blocks_is_still_valid() -> None:
    answer = '{"previous_step_success": true, "refine_prompt": ""}'
    text = f"\n{THINK}\n<answer>\n{answer}\n</answer>\n"
    assert parse_critic_output(text).format_valid


@pytest.mark.parametrize(
    ("text", "success", "refine", "repairs"),
    [
        (
            THINK + '<answer>{"previous_step_success": false, "refine_prompt": "x"}',
            False,
            "x",
            ("missing </answer> closing tag",),
        ),
        (
            THINK + '<answer>{"previous_step_success": true, "refine_prompt": "",}</answer>',
            True,
            "",
            ("removed trailing comma",),
        ),
        (
            THINK + "<answer>{'previous_step_success': true, 'refine_prompt': 'x'}</answer>",
            True,
            "x",
            ("converted single-quoted strings to double quotes",),
        ),
        (
            THINK + '<answer>```json\n{"previous_step_success": true, "refine_prompt": ""}\n```'
            "</answer>",
            True,
            "",
            ("stripped code fence around the JSON",),
        ),
        (
            THINK + '<answer>{"previous_step_success": "false", "refine_prompt": "x"}</answer>',
            False,
            "x",
            ('previous_step_success was the string "false", read as false',),
        ),
        (
            '<answer>{"previous_step_success": true, "refine_prompt": ""}</answer>',
            True,
            "",
            ("missing <think> block",),
        ),
        (
            THINK + "<answer>{previous_step_success: False, refine_prompt: None}</answer>",
            False,
            "",
            (
                "quoted unquoted keys",
                "converted Python literals (True/False/None) to JSON",
                "refine_prompt was null, used empty text",
            ),
        ),
        (
            THINK + '<answer>{"previous_step_success": 1}</answer>',
            True,
            "",
            (
                "previous_step_success was the number 1, read as true",
                "refine_prompt was missing, used empty text",
            ),
        ),
        (
            THINK + '<answer>Verdict: {"previous_step_success": true "refine_prompt": ""} ok'
            "</answer>",
            True,
            "",
            (
                "ignored text before the JSON",
                "inserted missing comma",
                "ignored text after the JSON",
            ),
        ),
        (
            THINK + '<answer>{"previous_step_success": false, "refine_prompt": "a blue squ',
            False,
            "a blue squ",
            ("missing </answer> closing tag", "closed unterminated string"),
        ),
        (
            '<answer>{"previous_step_success": true, "refine_prompt": ""}</answer>' + THINK,
            True,
            "",
            ("<answer> came before <think>",),
        ),
        (
            "The red circle is there.</think>"
            '<answer>{"previous_step_success": true, "refine_prompt": ""}</answer>',
            True,
            "",
            ("missing <think> opening tag",),
        ),
    ],
)
def test_repairable_outputs_are_noted(
    text: str, success: bool, refine: str, repairs: tuple[str, ...]
) -> None:
    result = parse_critic_output(text)
    assert result.value is not None, result.error
    assert (result.value.success, result.value.refine_prompt) == (success, refine)
    assert result.repairs == repairs
    assert not result.format_valid
    assert result.error is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "output is empty"),
        ("   \n", "output is empty"),
        ("The image looks fine to me.", "the answer contains no JSON object"),
        (THINK + "<answer></answer>", "the answer is empty"),
        (THINK + '<answer>{"verdict": "good"}</answer>', "has no previous_step_success"),
        (THINK + "<answer>[true, false]</answer>", "the answer JSON is not an object (got list)"),
        (THINK + '<answer>{"previous_step_success": "maybe"}</answer>', "must be true or false"),
        (THINK + '<answer>{"previous_step_success": null}</answer>', "must be true or false"),
        (THINK + "<answer>42</answer>", "the answer JSON is not an object (got int)"),
        (None, "output is not a string (got NoneType)"),
    ],
)
def test_hopeless_outputs_return_an_error(text: str, error: str) -> None:
    result = parse_critic_output(text)
    assert result.value is None
    assert not result.format_valid
    assert result.error is not None and error in result.error


def test_format_answer_round_trips() -> None:
    verdict = CriticVerdict(False, 'make the "sky" blue', "left red circle; centre none")
    text = format_critic_answer(verdict)
    result = parse_critic_output(text)
    assert result.format_valid
    assert result.value == verdict


def test_messages_hold_two_images_then_the_text() -> None:
    template = load_template("critic")
    messages = build_critic_messages(template, "draw a cat", "draw a black cat")
    assert [m["role"] for m in messages] == ["system", "user"]
    content = messages[1]["content"]
    assert [c["type"] for c in content] == ["image", "image", "text"]
    assert "draw a cat" in content[2]["text"] and "draw a black cat" in content[2]["text"]
    assert "previous_step_success" in messages[0]["content"][0]["text"]


def test_messages_reject_a_planner_template_and_bad_types() -> None:
    with pytest.raises(ValueError, match="role 'planner', expected 'critic'"):
        build_critic_messages(load_template("planner"), "a", "b")
    with pytest.raises(TypeError, match="used_prompt must be a str"):
        build_critic_messages(load_template("critic"), "a", None)  # type: ignore[arg-type]

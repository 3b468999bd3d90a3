"""Planner plan parsing, message building and SFT targets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from itk_rl.formats.plan import Plan, Step
from itk_rl.formats.planner import (
    build_planner_messages,
    format_planner_answer,
    parse_planner_output,
)
from itk_rl.formats.templates import load_template


def _step(n: Any, prompt: Any = "p", **extra: Any) -> dict[str, Any]:
    step = {
        "step_number": n,
        "step_name": f"name {n}",
        "instruction": f"do {n}",
        "prompt": prompt,
        "auxiliary_text": f"text {n}",
    }
    step.update(extra)
    return step


def _output(steps: Any, think: str = "Two steps.") -> str:
    return f"<think>{think}</think><answer>{json.dumps({'execution_plan': steps})}</answer>"


def test_valid_plan() -> None:
    result = parse_planner_output(_output([_step(1, "a cat"), _step(2, "make it black")]))
    assert result.format_valid and result.repairs == () and result.error is None
    assert result.think == "Two steps."
    assert result.value == Plan(
        (
            Step(1, "name 1", "do 1", "a cat", "text 1"),
            Step(2, "name 2", "do 2", "make it black", "text 2"),
        )
    )


def test_steps_out_of_order_are_sorted_with_a_note() -> None:
    result = parse_planner_output(_output([_step(2, "second"), _step(1, "first")]))
    assert result.value is not None
    assert [s.prompt for s in result.value.steps] == ["first", "second"]
    assert [s.step_number for s in result.value.steps] == [1, 2]
    assert result.repairs == ("sorted steps by step_number",)
    assert not result.format_valid


def test_zero_based_numbers_are_renumbered_with_a_note() -> None:
    result = parse_planner_output(_output([_step(0), _step(1)]))
    assert result.value is not None
    assert [s.step_number for s in result.value.steps] == [1, 2]
    assert result.repairs == ("renumbered steps 1..n",)


def test_string_step_number_is_noted() -> None:
    result = parse_planner_output(_output([_step("1"), _step(2)]))
    assert result.value is not None and len(result.value.steps) == 2
    assert result.repairs == ("step_number missing or not an integer in some steps",)


def test_step_without_prompt_is_dropped_with_a_note() -> None:
    result = parse_planner_output(_output([_step(1, "a cat"), _step(2, "  "), _step(3, "b")]))
    assert result.value is not None
    assert [s.prompt for s in result.value.steps] == ["a cat", "b"]
    assert result.repairs == ("dropped step 2: no prompt", "renumbered steps 1..n")


def test_missing_and_wrongly_typed_fields_are_noted() -> None:
    step = _step(1, prompt=7)
    del step["auxiliary_text"]
    step["step_name"] = None
    result = parse_planner_output(_output([step, "oops"]))
    assert result.value == Plan((Step(1, "", "do 1", "7", ""),))
    assert result.repairs == (
        "step 1: step_name was null, used empty text",
        "step 1: prompt was a int, converted to text",
        "step 1: auxiliary_text was missing, used empty text",
        "dropped step 2: not an object",
    )


def test_broken_json_and_missing_close_tag() -> None:
    answer = '{"execution_plan": [{"step_number": 1, "step_name": "a", "instruction": "b", '
    answer += '"prompt": "c", "auxiliary_text": "d",},]'
    result = parse_planner_output(f"<think>x</think><answer>{answer}")
    assert result.value == Plan((Step(1, "a", "b", "c", "d"),))
    assert result.repairs == (
        "missing </answer> closing tag",
        "removed trailing comma",
        "closed unclosed brackets",
    )
    assert not result.format_valid


def test_bare_list_is_read_as_the_plan() -> None:
    result = parse_planner_output(f"<think>x</think><answer>{json.dumps([_step(1)])}</answer>")
    assert result.value is not None and len(result.value.steps) == 1
    assert result.repairs == ("read a bare list of steps as execution_plan",)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "output is empty"),
        ("Here is my plan: draw a cat, then a dog.", "the answer contains no JSON object"),
        (_output([]), "the plan has no usable steps"),
        (_output([_step(1, prompt=None)]), "the plan has no usable steps"),
        ('<think>x</think><answer>{"steps": []}</answer>', "has no execution_plan"),
        (_output({"a": 1}), "is not a list (got dict)"),
        ('<think>x</think><answer>"a plan"</answer>', "has no execution_plan"),
    ],
)
def test_hopeless_plans_return_an_error(text: str, error: str) -> None:
    result = parse_planner_output(text)
    assert result.value is None and not result.format_valid
    assert result.error is not None and error in result.error


def test_format_answer_round_trips() -> None:
    plan = Plan((Step(1, "cat", "draw", "a cat", ""), Step(2, "hat", "edit", "add a hat", "Nice!")))
    result = parse_planner_output(format_planner_answer(plan, "Plan: cat, then hat."))
    assert result.format_valid
    assert result.value == plan
    assert result.think == "Plan: cat, then hat."


def test_messages_put_image_slots_before_the_text() -> None:
    request = "Show a cat, then give it a hat."
    messages = build_planner_messages(request, 2, load_template("planner"))
    assert [m["role"] for m in messages] == ["system", "user"]
    content = messages[1]["content"]
    assert [c["type"] for c in content] == ["image", "image", "text"]
    assert content[2]["text"] == request
    assert "execution_plan" in messages[0]["content"][0]["text"]
    no_images = build_planner_messages("a cat", 0, load_template("planner"))
    assert [c["type"] for c in no_images[1]["content"]] == ["text"]


def test_messages_reject_bad_arguments() -> None:
    template = load_template("planner")
    with pytest.raises(ValueError, match="num_input_images must be >= 0"):
        build_planner_messages("a cat", -1, template)
    with pytest.raises(TypeError, match="num_input_images must be an int"):
        build_planner_messages("a cat", "2", template)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role 'critic', expected 'planner'"):
        build_planner_messages("a cat", 0, load_template("critic"))

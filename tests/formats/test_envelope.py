"""The envelope splitter and JSON repair underneath both parsers; bad output never raises."""

from __future__ import annotations

import random

import pytest

from itk_rl.formats.critic import CriticVerdict, format_critic_answer, parse_critic_output
from itk_rl.formats.envelope import never_raising, parse_json_answer, split_envelope
from itk_rl.formats.plan import Plan, Step
from itk_rl.formats.planner import format_planner_answer, parse_planner_output


def test_strict_envelope_has_no_repairs() -> None:
    env = split_envelope("<think> why </think><answer> {} </answer>")
    assert (env.think, env.answer, env.repairs, env.error) == ("why", "{}", (), None)


@pytest.mark.parametrize(
    ("text", "think", "answer", "repairs"),
    [
        ("<think>a<answer>{}</answer>", "a", "{}", ("missing </think> closing tag",)),
        ("<think>a</think>{}", "a", "{}", ("missing <answer> block",)),
        ("<think>a</think>{}</answer>", "a", "{}", ("missing <answer> opening tag",)),
        ("Sure.<think>a</think><answer>{}</answer>", "a", "{}", ("ignored text before <think>",)),
        ("<think>a</think><answer>{}</answer>bye", "a", "{}", ("ignored text after </answer>",)),
        (
            "<think>a</think>so:<answer>{}</answer>",
            "a",
            "{}",
            ("ignored text between </think> and <answer>",),
        ),
    ],
)
def test_envelope_repairs(text: str, think: str, answer: str, repairs: tuple[str, ...]) -> None:
    env = split_envelope(text)
    assert (env.think, env.answer, env.repairs) == (think, answer, repairs)


def test_strict_json_needs_no_repair() -> None:
    assert parse_json_answer('{"a": [1, "x,]"]}') == ({"a": [1, "x,]"]}, [], None)


def test_hopeless_json() -> None:
    value, _, error = parse_json_answer("no json here")
    assert value is None and error is not None and "no JSON object" in error


JUNK = ['"', "'", "{", "}", "[", "]", ",", ":", "\\", "<", ">"]


def _mutations(text: str, rng: random.Random, count: int) -> list[str]:
    """Deterministic corruptions: truncations, deletions, duplications, junk insertions."""
    out = []
    for _ in range(count):
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars) + 1)
            op = rng.randrange(4)
            if op == 0:
                chars = chars[:i]
            elif op == 1 and chars:
                del chars[min(i, len(chars) - 1)]
            elif op == 2:
                chars.insert(i, rng.choice(JUNK))
            else:
                chars[i:i] = chars[max(0, i - 5) : i]
        out.append("".join(chars))
    return out


def test_corrupted_outputs_never_raise() -> None:
    rng = random.Random(0)
    critic = format_critic_answer(CriticVerdict(False, "a 'red' circle, left", "left none"))
    plan = Plan((Step(1, "a", "b", "c", "d"), Step(2, "e", "f", "g", "")))
    planner = format_planner_answer(plan, "think")
    for text in _mutations(critic, rng, 300):
        result = parse_critic_output(text)
        assert (result.value is None) == (result.error is not None)
        assert result.format_valid == (result.value is not None and not result.repairs)
        assert "internal parser error" not in (result.error or "")
    for text in _mutations(planner, rng, 300):
        result = parse_planner_output(text)
        assert (result.value is None) == (result.error is not None)
        assert result.format_valid == (result.value is not None and not result.repairs)
        assert "internal parser error" not in (result.error or "")


def test_a_parser_bug_becomes_a_reported_error_not_an_exception() -> None:
    def buggy(text: str):
        raise ZeroDivisionError("boom")

    result = never_raising(buggy, "<think>x</think><answer>{}</answer>")
    assert result.value is None and not result.format_valid
    assert result.error == "internal parser error (ZeroDivisionError: boom)"
    assert result.raw == "<think>x</think><answer>{}</answer>"

"""Prompt banks: the file format, slot rules, seeded sampling, and teacher expansion."""

from __future__ import annotations

from pathlib import Path

import pytest

from itk_rl.data.prompts import PromptBank, PromptSampler, expand_bank, load_bank
from itk_rl.interfaces.engine import Completion
from itk_rl.testbed.agents import plan_request

BANK = {
    "slots": {"colour": [["red", "crimson"], "blue", "green"], "thing": ["cat", "dog"]},
    "domains": {
        "pets": {
            "one": ["a {colour} {thing}"],
            "two": ["a {colour} {thing}, a {colour#2} {thing}"],
        },
        "misc": {"same": ["{colour} then {colour}"]},
    },
}


def test_slots_repeat_and_numbered_slots_differ():
    sampler = PromptSampler(PromptBank.from_dict(BANK), seed=0, synonym_rate=0.5)
    prompts = sampler.sample(200)
    assert {p.domain for p in prompts} == {"pets", "misc"}
    assert {p.sub_category for p in prompts} == {"one", "two", "same"}
    for p in prompts:
        if p.sub_category == "same":
            first, second = p.text.split(" then ")
            assert first == second
        if p.sub_category == "two":
            a, b = (part.split()[1] for part in p.text.split(", "))
            assert a != b and {a, b} != {"red", "crimson"}  # distinct groups, not spellings
    assert any("crimson" in p.text for p in prompts)
    assert [p.id for p in prompts[:3]] == ["000000", "000001", "000002"]


def test_sampling_is_seeded_and_a_larger_count_extends():
    bank = PromptBank.from_dict(BANK)
    small = PromptSampler(bank, seed=3).sample(5)
    large = PromptSampler(bank, seed=3).sample(9)
    assert large[:5] == small
    assert PromptSampler(bank, seed=4).sample(5) != small


def test_bad_banks_are_named(tmp_path: Path):
    bad = {**BANK, "domains": {"pets": {"one": ["a {size} {thing}"]}}}
    with pytest.raises(ValueError, match="unknown slot 'size'"):
        PromptBank.from_dict(bad, "mine.yaml")
    many = {**BANK, "domains": {"pets": {"one": ["{thing} {thing#2} {thing#3}"]}}}
    with pytest.raises(ValueError, match="needs 3 distinct 'thing' values"):
        PromptBank.from_dict(many)
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_bank(tmp_path / "nope.yaml")


def test_the_testbed_bank_gives_requests_the_scripted_planner_can_plan():
    for prompt in PromptSampler("testbed", seed=0, synonym_rate=0.5).sample(100):
        assert plan_request(prompt.text).steps  # raises on a request outside the grammar
    assert load_bank("general").num_templates >= 16


class ScriptedTeacher:
    """Answers every expansion request with the same lines, some of them unusable."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.requests = []

    def generate(self, requests, params):
        self.requests += requests
        return [[Completion("\n".join(self.lines))] for _ in requests]


def test_expand_bank_keeps_only_usable_templates():
    bank = PromptBank.from_dict(BANK)
    teacher = ScriptedTeacher(
        ["- a sleepy {colour} {thing}", "no slots here", "a {hat} {thing}", "a {colour} {thing}"]
    )
    expanded, report = expand_bank(bank, teacher, per_sub_category=4)
    assert len(teacher.requests) == 3  # one per sub-category, in one generate call
    asked = [r.messages[0]["content"][0]["text"] for r in teacher.requests]
    assert any("Domain: pets. Sub-category: two." in text for text in asked)
    assert expanded.domains["pets"]["one"] == ("a {colour} {thing}", "a sleepy {colour} {thing}")
    assert expanded.domains["misc"]["same"][1:] == (
        "a sleepy {colour} {thing}",
        "a {colour} {thing}",
    )
    # Kept: 1 in pets/one (the other line is a duplicate there), 2 in each other sub-category.
    assert (report.asked, report.kept, report.rejected) == (12, 5, 7)
    assert bank.domains["pets"]["one"] == ("a {colour} {thing}",)  # the original is unchanged

"""Loading prompt templates by packaged name or path, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from itk_rl.formats.templates import load_template, packaged_template_names

CRITIC = """role: critic
=== system ===
Judge the edit. Answer {"previous_step_success": true, "refine_prompt": ""}. Costs $$0.
=== user ===
Asked: $original_prompt / used: ${used_prompt}
"""


def test_packaged_templates_load() -> None:
    assert packaged_template_names() == [
        "critic",
        "critic_testbed",
        "judge_edit",
        "judge_quality",
        "judge_text_to_image",
        "planner",
    ]
    for name, role in [("critic", "critic"), ("critic_testbed", "critic"), ("planner", "planner")]:
        template = load_template(name)
        assert (template.name, template.role) == (name, role)
        assert template.system and template.user


def test_testbed_critic_template_is_short_and_carries_both_prompts() -> None:
    template = load_template("critic_testbed")
    system, user = template.render(original_prompt="make the disc red", used_prompt="make it red")
    assert len(system.split()) <= 20  # each prompt token costs every SFT and GRPO step on a CPU
    assert "before" in system and "after" in system
    assert user == "Instruction: make the disc red\nUsed: make it red"


def test_template_from_a_path_renders(tmp_path: Path) -> None:
    path = tmp_path / "my_critic.txt"
    path.write_text(CRITIC, encoding="utf-8")
    template = load_template(str(path))
    assert (template.name, template.role, template.source) == ("my_critic", "critic", str(path))
    system, user = template.render(original_prompt="a cat", used_prompt="a black cat")
    assert system.endswith("Costs $0.")
    assert '{"previous_step_success": true' in system
    assert user == "Asked: a cat / used: a black cat"
    assert load_template(path).user == template.user


def test_missing_file_names_the_path_and_the_packaged_names(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError) as info:
        load_template(str(missing))
    assert str(missing) in str(info.value)
    assert "critic, critic_testbed, judge_edit" in str(info.value)
    with pytest.raises(FileNotFoundError, match="packaged templates"):
        load_template("critc")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CRITIC.replace("${used_prompt}", "it"), r"missing required placeholder \$used_prompt"),
        (CRITIC.replace("Asked:", "Asked $step:"), r"unknown placeholder \$step"),
        (CRITIC.replace("$$0", "$ 0"), r"stray '\$'"),
        (CRITIC.replace("role: critic", "role: judge"), "unknown role 'judge'"),
        (CRITIC.replace("role: critic\n", ""), "first line must be 'role: <role>'"),
        (CRITIC.replace("=== user ===", ""), "needs exactly one"),
        ("", "first line must be"),
    ],
)
def test_malformed_template_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_template(str(path))
    assert str(path) in str(info.value)


def test_wrong_argument_type() -> None:
    with pytest.raises(TypeError, match="name_or_path"):
        load_template(3)  # type: ignore[arg-type]

"""The benchmark judges' templates (packaged, asking for the official answer formats, and
replaceable by a file) and the shared readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from itk_rl.eval.benchmarks.common import json_objects, read_rows, strip_think
from itk_rl.eval.benchmarks.templates import JUDGE_ROLES, load_judge_template

# What each packaged template must ask for: the official answer format its parser reads.
ANSWER_FORMATS = {
    "wise_legacy": ("Consistency: <", "Realism: <", "Aesthetic Quality: <"),
    "wise_verified": ("Score: 1", "Score: 0"),
    "rise_": ("Final Score: <",),
    "ueval_": ('{"criteria_met": true}', '{"criteria_met": false}', '"not sure"'),
    "comm_coherence": ('"Image_Coherence"', '"overall_score"', '"Completeness"', '"NA"'),
    "comm_descriptions": ('"Tasks"', '"Content of Image 0"'),
    "comm_fidelity": ('"Consistency"', '"overall_score"'),
}


@pytest.mark.parametrize("role", list(JUDGE_ROLES))
def test_packaged_templates_ask_for_the_official_answer(role: str) -> None:
    template = load_judge_template(role)
    assert template.role == role and template.system and template.user
    wanted = next(v for k, v in ANSWER_FORMATS.items() if role.startswith(k))
    for text in wanted:
        assert text in template.system, f"{role} does not ask for {text!r}"


def test_templates_render_their_values() -> None:
    _, user = load_judge_template("ueval_image_open").render(
        question="Q?", text_answer="A.", criterion="shows a knot"
    )
    assert "Question: Q?" in user and "Model's text answer: A." in user
    assert user.endswith("Criterion: shows a knot")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_recipe_may_replace_a_template_by_a_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "role: rise_reasoning\n=== system ===\nGrade.\n=== user ===\n"
        "Do $instruction; expect $reference. Costs $$1.\n",
    )
    template = load_judge_template("rise_reasoning", path)
    assert template.source == str(path)
    assert template.render(instruction="x", reference="y")[1] == "Do x; expect y. Costs $1."


@pytest.mark.parametrize(
    ("role", "text", "message"),
    [
        (
            "rise_reasoning",
            "role: rise_consistency\n=== system ===\n=== user ===\n$instruction",
            "first line must be 'role: rise_reasoning'",
        ),
        (
            "rise_reasoning",
            "role: rise_reasoning\n=== system ===\n=== user ===\n$instruction",
            r"must use \$reference",
        ),
        # the closed image judge sees the question and the images only, never the text answer
        (
            "ueval_image_closed",
            "role: ueval_image_closed\n=== system ===\n=== user ===\n"
            "$question $criterion $text_answer",
            r"unknown \$text_answer",
        ),
        ("wise_verified", "role: wise_verified\n=== user ===\n$prompt", "needs one"),
        (
            "wise_verified",
            "role: wise_verified\n=== system ===\n5$\n=== user ===\n$prompt",
            "stray",
        ),
    ],
)
def test_wrong_template_files_are_refused_by_name(
    tmp_path: Path, role: str, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as err:
        load_judge_template(role, path)
    assert str(path) in str(err.value)


def test_unknown_role_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown benchmark judge role"):
        load_judge_template("geneval")
    with pytest.raises(FileNotFoundError, match=r"absent\.txt"):
        load_judge_template("wise_legacy", tmp_path / "absent.txt")


def test_json_objects_reads_complete_objects_only() -> None:
    text = 'Set {a} aside. {"x": {"y": 1}} then {"z": [1, 2]} and {"broken": '
    assert list(json_objects(text)) == [{"x": {"y": 1}}, {"z": [1, 2]}]
    assert strip_think("<think>Score: 0</think>Score: 1") == "Score: 1"
    assert strip_think("thinking without an opening tag</think>Score: 1") == "Score: 1"


def test_json_lines_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows.jsonl, line 3"):
        read_rows(path, "rows", "nowhere")
    path.write_text('{"a": 1}\n[1]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"row 1: field '<record>' is not a JSON object"):
        read_rows(path, "rows", "nowhere")

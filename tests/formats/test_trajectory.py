"""Requests from user input, and trajectories round-tripping through JSON and `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from itk_rl.formats.critic import CriticVerdict, format_critic_answer, parse_critic_output
from itk_rl.formats.images import RecordError, white_canvas
from itk_rl.formats.plan import Plan, Step
from itk_rl.formats.planner import format_planner_answer, parse_planner_output
from itk_rl.formats.score import JudgeScore
from itk_rl.formats.trajectory import (
    Attempt,
    Request,
    StepRecord,
    Trajectory,
    trajectory_features,
)


def _image(seed: int, size: tuple[int, int] = (12, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _trajectory() -> Trajectory:
    plan = Plan((Step(1, "cat", "draw", "a cat", "A cat."), Step(2, "hat", "edit", "add a hat")))
    planner = parse_planner_output(format_planner_answer(plan, "two steps"))
    fail = parse_critic_output(format_critic_answer(CriticVerdict(False, "a grey cat", "no cat")))
    ok = parse_critic_output("<answer>{'previous_step_success': 'true'}</answer>")
    steps = (
        StepRecord(
            plan.steps[0],
            (
                Attempt("a cat", 10, _image(1), fail, JudgeScore(2.0, 7.5)),
                Attempt("a grey cat", 11, _image(2), ok, JudgeScore(9.0, 8.0)),
            ),
            final_attempt=1,
        ),
        StepRecord(
            plan.steps[1],
            (
                Attempt("add a hat", 20, None, None, None, "render timed out"),
                Attempt("add a hat", 21, _image(2), None),
            ),
            final_attempt=1,
        ),
    )
    return Trajectory(Request("Draw a cat, then add a hat.", (_image(0),)), planner, steps)


def _assert_same(a: Trajectory, b: Trajectory) -> None:
    assert a.request.text == b.request.text
    assert len(a.request.images) == len(b.request.images)
    for x, y in zip(a.request.images, b.request.images, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.planner == b.planner
    assert len(a.steps) == len(b.steps)
    for s, t in zip(a.steps, b.steps, strict=True):
        assert (s.step, s.final_attempt) == (t.step, t.final_attempt)
        for u, v in zip(s.attempts, t.attempts, strict=True):
            assert (u.prompt, u.seed, u.critic, u.score, u.error) == (
                v.prompt,
                v.seed,
                v.critic,
                v.score,
                v.error,
            )
            if u.image is None:
                assert v.image is None
            else:
                np.testing.assert_array_equal(u.image, v.image)


def test_json_round_trip_with_png_files(tmp_path: Path) -> None:
    trajectory = _trajectory()
    data = trajectory.to_json_dict(tmp_path / "images")
    text = json.dumps(data)
    assert "base64" not in text and len(text) < 5000
    # Three distinct images (the shared one is stored once), as PNG files named in the JSON.
    assert sorted(p.suffix for p in (tmp_path / "images").iterdir()) == [".png"] * 3
    assert data["steps"][0]["attempts"][1]["image"] == data["steps"][1]["attempts"][1]["image"]
    loaded = Trajectory.from_json_dict(json.loads(text), tmp_path / "images")
    _assert_same(trajectory, loaded)
    assert loaded.plan is not None and loaded.plan.steps[1].prompt == "add a hat"
    assert loaded.steps[0].attempts[0].verdict == CriticVerdict(False, "a grey cat", "no cat")
    assert not loaded.steps[0].attempts[1].critic.format_valid  # type: ignore[union-attr]
    assert loaded.steps[1].final is loaded.steps[1].attempts[1]


def test_datasets_round_trip(tmp_path: Path) -> None:
    datasets.disable_progress_bars()
    trajectory = _trajectory()
    table = datasets.Dataset.from_list([trajectory.to_row()], features=trajectory_features())
    table.save_to_disk(str(tmp_path / "ds"))
    table.to_parquet(str(tmp_path / "t.parquet"))
    from_disk = datasets.load_from_disk(str(tmp_path / "ds"))
    from_parquet = datasets.Dataset.from_parquet(
        str(tmp_path / "t.parquet"), cache_dir=str(tmp_path / "cache")
    )
    for table in (from_disk, from_parquet):
        assert len(table[0]["images"]) == 3
        _assert_same(trajectory, Trajectory.from_row(table[0]))


def test_missing_field_is_named(tmp_path: Path) -> None:
    data = _trajectory().to_json_dict(tmp_path)
    del data["steps"][1]["attempts"][0]["seed"]
    where = r"trajectory\.steps\[1\]\.attempts\[0\]"
    with pytest.raises(RecordError, match=where + ": missing field 'seed'"):
        Trajectory.from_json_dict(data, tmp_path)
    data = _trajectory().to_json_dict(tmp_path)
    del data["steps"][0]["step"]["prompt"]
    with pytest.raises(RecordError, match=r"steps\[0\]\.step: missing field 'prompt'"):
        Trajectory.from_json_dict(data, tmp_path)
    data = _trajectory().to_json_dict(tmp_path)
    del data["planner"]
    with pytest.raises(RecordError, match="trajectory: missing field 'planner'"):
        Trajectory.from_json_dict(data, tmp_path)


def test_missing_image_file_is_named(tmp_path: Path) -> None:
    data = _trajectory().to_json_dict(tmp_path)
    name = data["request"]["images"][0]
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        Trajectory.from_json_dict(data, tmp_path)
    data["request"]["images"][0] = "../outside.png"
    with pytest.raises(RecordError, match="must be relative"):
        Trajectory.from_json_dict(data, tmp_path)


def test_request_from_user_reads_images(tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    Image.fromarray(_image(3)).save(path)
    Image.fromarray(_image(4)).convert("L").save(tmp_path / "grey.png")
    request = Request.from_user("Make it blue.", [str(path), tmp_path / "grey.png"])
    assert request.text == "Make it blue."
    np.testing.assert_array_equal(request.images[0], _image(3))
    assert request.images[1].shape == (12, 16, 3) and request.images[1].dtype == np.uint8
    assert Request.from_user("no images").images == ()


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_request_text_must_not_be_empty(text: str) -> None:
    with pytest.raises(ValueError, match="request text is empty"):
        Request.from_user(text)


def test_request_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        Request.from_user("x", [missing])
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt") as info:
        Request.from_user("x", [str(not_image)])
    assert "not a readable image" in str(info.value)
    with pytest.raises(ValueError, match="not a file"):
        Request.from_user("x", [tmp_path])


def test_request_wrong_types() -> None:
    with pytest.raises(TypeError, match="text must be a str"):
        Request.from_user(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="image_paths must be a list of paths, got str"):
        Request.from_user("x", "cat.png")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"image_paths\[1\] must be a path, got int"):
        Request.from_user("x", ["a.png", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"request image 0 must be a uint8 array of shape \["):
        Request("x", (np.zeros((4, 4), dtype=np.uint8),))


def test_step_record_checks_final_attempt() -> None:
    with pytest.raises(ValueError, match="final_attempt 2 is out of range for 1 attempts"):
        StepRecord(Step(1, "a", "b", "c"), (Attempt("c", 0, white_canvas(4, 4)),), 2)
    assert white_canvas(2, 3).shape == (2, 3, 3) and white_canvas(2, 3).min() == 255

"""`itk generate`: run folders, overrides, bad input caught before any model loads, batch
mode with resume, and the same code path on the tiny VLM and the tiny Klein."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import itk_rl.pipeline.generate as generate_module
from itk_rl.cli import main
from itk_rl.formats import Trajectory
from itk_rl.pipeline.run_folder import read_status
from itk_rl.testbed import Scene, ShapeObject, render

REQUEST = "Show step by step: draw a crimson disc on the left, then add an azure box on the right"


def load(run) -> Trajectory:
    data = json.loads((run / "trajectory.json").read_text())
    return Trajectory.from_json_dict(data, run / "images")


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if anything tries to build (load) the pipeline."""

    def refuse(cfg):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(generate_module, "build_pipeline", refuse)


def test_generate_writes_page_trajectory_and_images(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["generate", REQUEST, "--out", str(run), "pipeline.max_attempts=2"]) == 0
    trajectory = load(run)
    assert [r.step.prompt for r in trajectory.steps] == [
        "draw a crimson disc on the left",
        "add an azure box on the right",
    ]
    assert all(len(r.attempts) == 2 for r in trajectory.steps)  # misrendered, then refined
    assert len(list((run / "images").glob("*.png"))) >= 4
    page = (run / "index.html").read_text()
    assert "finished: 2 step(s)" in page and 'src="images/' in page
    assert read_status(run).state == "finished"
    err = capsys.readouterr().err
    assert "step 1 attempt 1/2: critic rejected" in err and "finished:" in err


def test_baseline_switches_and_overrides_after_options(tmp_path):
    run = tmp_path / "run"
    args = ["generate", "draw a red circle on the left", "--out", str(run), "planner=none"]
    assert main([*args, "critic=none", "generator.misrender_prob=0.0"]) == 0
    [record] = load(run).steps
    assert record.step.prompt == "draw a red circle on the left" and len(record.attempts) == 1
    assert "planner: none" in (run / "index.html").read_text()


def test_an_input_image_is_edited(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(render(Scene.of(left=ShapeObject("circle", "red")))).save(path)
    run = tmp_path / "run"
    assert main(["generate", "make the circle blue", "--image", str(path), "--out", str(run)]) == 0
    trajectory = load(run)
    assert len(trajectory.request.images) == 1
    final = trajectory.steps[0].final.image
    assert final[24, 8].tolist() == [30, 60, 220]  # the circle, now blue


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "request text is empty"),
        (["hi", "--image", "missing.png"], "input image file not found: 'missing.png'"),
        (["hi", "--image", "{bad}"], "is not a readable image"),
        (["hi", "generator=nope"], "Could not find 'generator/nope'"),
        (
            ["hi", "generator=flux2_klein", "generator.model=/no/such/model"],
            "generator.model: '/no/such/model' is neither an existing path nor",
        ),
        (
            ["hi", "generator=flux2_klein", "generator.model=a/b/c"],
            "generator.model: 'a/b/c' is neither",
        ),
        (["hi", "generator._target_=itk_rl.nope.Gen"], "generator._target_: cannot import"),
        (["hi", "--config-name", "generate_tiny"], "tiny_models"),
        (["--batch", "missing.jsonl", "--out", "x"], "batch file not found"),
    ],
)
def test_bad_input_fails_before_any_model_loads(
    tmp_path, monkeypatch, capsys, no_models, args, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "{bad}").write_text("not an image")
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("itk generate: error:") and message in err


def test_a_run_folder_is_never_overwritten(tmp_path, capsys, no_models):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"state": "finished", "message": "done"}')
    assert main(["generate", "hi", "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def write_batch(path, lines):
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def test_batch_runs_every_request_and_resumes(tmp_path, monkeypatch, capsys):
    image = tmp_path / "start.png"
    Image.fromarray(render(Scene.of(centre=ShapeObject("square", "green")))).save(image)
    batch = tmp_path / "requests.jsonl"
    write_batch(
        batch,
        [
            {"id": "a", "text": REQUEST},
            {"id": "b", "text": "make the square yellow", "images": ["start.png"]},
            {"id": "c", "text": "a cat in a hat"},  # outside the testbed grammar: no plan
        ],
    )
    out = tmp_path / "out"
    assert main(["generate", "--batch", str(batch), "--out", str(out)]) == 1
    assert [read_status(out / i).state for i in "abc"] == ["finished", "finished", "stopped"]
    assert (out / "c" / "planner_output.txt").is_file()
    assert "1 failed" in capsys.readouterr().err

    # Resume: finished requests are skipped; only the failed one runs again.
    ran = []
    real = generate_module.generate_one
    monkeypatch.setattr(
        generate_module, "generate_one", lambda p, r, o, *a: ran.append(o.name) or real(p, r, o, *a)
    )
    assert main(["generate", "--batch", str(batch), "--out", str(out)]) == 1
    assert ran == ["c"]
    write_batch(
        batch,
        [
            {"id": "a", "text": REQUEST},
            {"id": "b", "text": "make the square yellow", "images": ["start.png"]},
        ],
    )
    monkeypatch.setattr(generate_module, "build_pipeline", lambda cfg: pytest.fail("loaded"))
    assert main(["generate", "--batch", str(batch), "--out", str(out)]) == 0
    assert "already finished" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not JSON"),
        ('{"id": "x/y", "text": "hi"}', "line 2: id 'x/y' must be"),
        ('{"id": "a", "text": "hi"}', "line 2: id 'a' already used on line 1"),
        ('{"id": "b", "text": ""}', "line 2: request text is empty"),
        ('{"id": "b", "text": "hi", "images": ["nope.png"]}', "line 2: input image file not found"),
        ('{"id": "b", "txt": "hi"}', "line 2: unknown keys ['txt']"),
    ],
)
def test_bad_batch_lines_name_the_line(tmp_path, capsys, no_models, line, message):
    batch = tmp_path / "requests.jsonl"
    batch.write_text('{"id": "a", "text": "hi"}\n' + line + "\n")
    assert main(["generate", "--batch", str(batch), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_tiny_vlm_planner_junk_is_saved_and_the_error_names_the_file(tiny_models, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["generate", REQUEST, "--out", str(run), "--config-name", "generate_tiny"]
    assert main([*args, f"tiny_models={tiny_models.root}"]) == 1
    saved = run / "planner_output.txt"
    assert saved.is_file()
    assert f"the raw planner output is saved in {saved}" in capsys.readouterr().err
    assert read_status(run).state == "stopped"


def test_the_full_loop_runs_on_the_tiny_klein(tiny_models, tmp_path):
    run = tmp_path / "run"
    args = ["generate", REQUEST, "--out", str(run), "--config-name", "generate_tiny"]
    overrides = ["planner=testbed_scripted", "critic=testbed_oracle", "pipeline.max_attempts=2"]
    assert main([*args, *overrides, f"tiny_models={tiny_models.root}"]) == 0
    trajectory = load(run)
    assert len(trajectory.steps) == 2
    for record in trajectory.steps:
        assert record.final.image.shape == (64, 64, 3)
        assert all(a.error is None for a in record.attempts)
    assert not np.array_equal(trajectory.steps[0].attempts[0].image, np.zeros((64, 64, 3)))


def test_tiny_models_command_builds_models_loadable_by_path(tmp_path, capsys):
    from transformers import AutoProcessor, AutoTokenizer

    assert main(["tiny-models", str(tmp_path / "tiny"), "--tokenizer", "word"]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert set(printed) == {"root", "tokenizer", "qwen2_5_vl", "qwen3_vl", "klein"}
    tokenizer = AutoTokenizer.from_pretrained(printed["tokenizer"])
    assert len(tokenizer.tokenize(" circle")) == 1  # word level: testbed words are one token
    assert AutoProcessor.from_pretrained(printed["qwen2_5_vl"]).tokenizer.vocab == tokenizer.vocab
    assert (Path(printed["klein"]) / "model_index.json").is_file()

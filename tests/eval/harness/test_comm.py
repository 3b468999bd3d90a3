"""`itk eval comm` end to end, tasks 3 and 4: per-sample folders in the official layout, the
three judge calls (images numbered across input and output, descriptions without images,
fidelity pairing each output image with its description), a sample with an unreadable result
left out, and the seven means by hand (NA as 0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Call, FakeAPI


def record(data_id: str, title: str, steps: int) -> dict:
    return {
        "data_id": data_id,
        "title": title,
        "step_info": [
            [
                {"type": "text", "content": f"{title} step {k}."},
                {"type": "image", "content": None, "image_path": f"{data_id}/{k}.png", "url": None},
            ]
            for k in range(1, steps + 1)
        ],
    }


COHERENCE = json.dumps(
    {
        "scores": {
            "Image_Coherence": {
                "overall_score": {
                    "justification": "ok",
                    "style_consistency": 8,
                    "entity_consistency": "6",
                    "trend_consistency": 7,
                    "overall_consistency": "NA",
                }
            },
            "Completeness": {"Justification": "", "Score": 9},
            "Image_Quality": {"Justification": "", "Score": 5},
        }
    }
)
DESCRIPTIONS = json.dumps(
    {"Tasks": {"Create an Interleaved Text-Image Document": {
        f"Content of Image {i}": f"desc {i}" for i in range(6)}}}
)  # fmt: skip
FIDELITY = '{"Consistency": {"image_1_score": 6, "overall_score": 6, "Justification": ""}}'


def test_comm_runs_both_tasks_in_the_official_layout(fake_api: FakeAPI, tmp_path: Path) -> None:
    data, images = tmp_path / "comm", tmp_path / "comm" / "images"
    data.mkdir()
    records = [record("d1", "Indoor garden", 4), record("d2", "Bread", 2)]
    (data / "test.json").write_text(json.dumps(records))
    for k in (1, 2):  # d2's image was never downloaded: left out of its task-3 input
        fake_api.write_png(images / "d1" / f"{k}.png", fake_api.scene_image("yellow"))

    def coherence(call: Call) -> str:
        task4_bread = "Title: Bread" in call.user and "first steps" not in " ".join(call.texts)
        return "I would rather not." if task4_bread else COHERENCE

    fake_api.answers.update(
        planner=fake_api.two_step_plan,
        comm_coherence=coherence,
        comm_descriptions=lambda call: DESCRIPTIONS,
        comm_fidelity=lambda call: FIDELITY,
    )
    run = tmp_path / "run"
    words = [
        f"benchmark.data_dir={data}",
        "benchmark.data_file=test.json",
        f"benchmark.images_dir={images}",
        "benchmark.fetch=false",
        *fake_api.overrides(),
    ]
    assert fake_api.run("comm", run, *words) == 0

    folder = run / "results" / "d1_task3"
    output = json.loads((folder / "results.json").read_text())
    assert (
        output["model_input"].count("<IMAGE>") == 2
        and "Indoor garden step 1." in output["model_input"]
    )
    assert output["model_output"] == "(3) First, a circle. <IMAGE> (4) Then a square. <IMAGE>"
    assert output["input_image_list"] == ["input_1.png", "input_2.png"]
    assert output["prediction_image_list"] == ["predict_3.png", "predict_4.png"]
    assert all((folder / name).is_file() for name in ["input_1.png", "predict_4.png"])
    task4 = json.loads((run / "results" / "d1_task4" / "results.json").read_text())
    assert task4["input_image_list"] == [] and task4["prediction_image_list"][0] == "predict_1.png"
    bread3 = json.loads((run / "results" / "d2_task3" / "results.json").read_text())
    assert bread3["input_image_list"] == [] and "<IMAGE>" not in bread3["model_input"]

    garden3 = next(c for c in fake_api.of("comm_coherence") if "first steps" in " ".join(c.texts)
                   and "Indoor" in c.user)  # fmt: skip
    assert len(garden3.images) == 4 and "<Img_2>" in garden3.texts  # numbered across both
    described = next(c for c in fake_api.of("comm_descriptions") if "Indoor" in c.user)
    assert described.images == [] and "<Img_0>" in described.texts
    paired = [c for c in fake_api.of("comm_fidelity") if "<Description_0> desc 2 </Description_0>"
              in c.texts]  # fmt: skip
    assert len(paired) == 1 and len(paired[0].images) == 2  # d1, task 3: outputs are 2 and 3
    assert fake_api.count()["comm_coherence"] == 4 + 2  # the unreadable one asked three times

    results = json.loads((run / "results.json").read_text())
    rows = dict((name, values) for name, values in results["rows"])
    # Every scored sample: style 8, entity 6, trend 7, overall NA → 0, completeness 9,
    # quality 5, fidelity 6. Task 4 lost d2 (coherence unreadable after three tries).
    assert rows["task 3 style_consistency"] == [8.0, 2]
    assert rows["task 3 overall_consistency"] == [0.0, 2]
    assert rows["task 4 text_fidelity"] == [6.0, 1] and rows["task 4 completeness"] == [9.0, 1]
    assert results["official"]["task4"]["left_out"] == 1
    assert results["data"]["missing_input_images"] == 1
    saved = json.loads((folder / "evaluation_results.json").read_text())
    assert saved["coherence_score"]["trend_consistency"] == 7.0
    assert not (run / "results" / "d2_task4" / "evaluation_results.json").exists()

    # Resumed: the fidelity calls, which need the cached descriptions, come from the cache too.
    before = fake_api.count()
    assert fake_api.run("comm", run, *words) == 0
    assert fake_api.count() == before
    assert json.loads((run / "results.json").read_text())["rows"] == results["rows"]

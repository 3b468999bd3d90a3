"""`itk eval ueval` end to end (the full pipeline, two steps per answer): the official output
JSON, one judge call per rubric item with what open and closed tasks show the judge, "not sure"
and unreadable answers not met, an item without an output judged as empty, rates by hand, and a
rerun that retries the failed item and judges nothing twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Call, FakeAPI

ITEMS = [
    {"id": "art_1", "task_type": "art", "prompt": "U1 how to paint a sky",
     "text_rubrics": ["mentions blue", "mentions clouds"],
     "image_rubrics": [{"criterion": "shows a sky", "tags": []}]},
    {"id": "space_1", "task_type": "space", "prompt": "U2 where is the sun",
     "text_rubrics": [], "image_rubrics": ["shows the sun", "shows an orbit"]},
    {"id": "tech_1", "task_type": "tech", "prompt": "U3 fix a bike",
     "text_rubrics": ["names a wrench"], "image_rubrics": []},
]  # fmt: skip
VERDICTS = {
    "mentions blue": '{"criteria_met": true}',
    "mentions clouds": 'Hard to say.\n```json\n{"criteria_met": "not sure"}\n```',
    "shows a sky": '{"criteria_met": "yes"}',
    "shows the sun": '{"criteria_met": true}',
    "shows an orbit": '{"criteria_met": false}',
    "names a wrench": "The answer is empty.",
}


def test_ueval_runs_judges_rubrics_and_resumes(fake_api: FakeAPI, tmp_path: Path) -> None:
    data = tmp_path / "ueval"
    data.mkdir()
    (data / "items.jsonl").write_text("\n".join(json.dumps(item) for item in ITEMS) + "\n")

    def plan(call: Call) -> str:
        return "no plan" if "U3" in call.user else fake_api.two_step_plan(call)

    def verdict(call: Call) -> str:
        return VERDICTS[call.user.rsplit("Criterion: ", 1)[1]]

    fake_api.answers["planner"] = plan
    for role in ("ueval_text", "ueval_image_open", "ueval_image_closed"):
        fake_api.answers[role] = verdict
    run = tmp_path / "run"
    words = [
        f"benchmark.data_dir={data}",
        "benchmark.data_file=items.jsonl",
        "benchmark.fetch=false",
        *fake_api.overrides(),
    ]
    assert fake_api.run("ueval", run, *words) == 1  # tech_1 has no output

    outputs = json.loads((run / "outputs.json").read_text())
    text = "First, a circle.\n\nThen a square."
    assert outputs[0] == {
        "id": "art_1",
        "text_answer": text,
        "image_answer": ["images/art_1_1.png", "images/art_1_2.png"],
    }
    assert [row["id"] for row in outputs] == ["art_1", "space_1"]
    assert all((run / path).is_file() for row in outputs for path in row["image_answer"])
    opened = fake_api.of("ueval_image_open")[0]
    assert len(opened.images) == 2 and text in opened.user
    closed = fake_api.of("ueval_image_closed")
    assert len(closed) == 2 and all(len(c.images) == 2 for c in closed)
    assert all("text answer" not in c.user for c in closed)  # closed: question and images
    empty = fake_api.of("ueval_text")[-1]
    assert "U3" in empty.user and len(empty.images) == 0  # judged as an empty answer
    assert fake_api.count()["ueval_text"] == 2 + 3  # the unreadable one asked three times

    results = json.loads((run / "results.json").read_text())
    rows = dict((name, values) for name, values in results["rows"])
    # art: text 1/2 ("not sure" is not met), image 1/1 → 75; space: image 1/2 (no text
    # rubrics: no text rate) → 50; tech: 0/1 (unreadable, not met), no image rubrics → 0.
    assert rows["art"] == [75.0, 50.0, 100.0, 1]
    assert rows["space"] == [50.0, None, 50.0, 1]
    assert rows["tech"] == [0.0, 0.0, None, 1]
    assert rows["all items"] == [None, 25.0, 75.0, 3]
    assert results["overall"] is None and rows["life"] == [None, None, None, 0]
    assert results["judge"]["unreadable"] == ["tech_1/text/0"]
    assert list(results["generation"]["failed"]) == ["tech_1"]
    assert "our choice" in results["notes"][0]

    before = fake_api.count()
    assert fake_api.run("ueval", run, *words) == 1
    assert fake_api.count() - before == {"planner": 1}  # tech_1 tried again; nothing re-judged

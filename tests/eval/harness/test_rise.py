"""`itk eval rise` end to end (the planner without a critic, editing each input image): outputs
at `images/{category}/{index}.png`, the judge calls each category needs (a reference image
judged against, consistency-free without consistency, logical 0/1 mapped), thumbnails, and
accuracy over all samples computed by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Call, FakeAPI

RECORDS = [
    {"index": "t1", "category": "temporal_reasoning", "instruction": "R1 age it",
     "image": "temporal_reasoning_images/1.png", "reference": "an old tree"},
    {"index": "c1", "category": "causal_reasoning", "instruction": "R2 heat it",
     "image": "causal_reasoning_images/1.png", "reference": "melted", "consistency_free": True},
    {"index": "s1", "category": "spatial_reasoning", "instruction": "R3 stack them",
     "image": "spatial_reasoning_images/1.png", "reference_img": "spatial_reasoning_images/r.png"},
    {"index": "l1", "category": "logical_reasoning", "instruction": "R4 solve it",
     "image": "logical_reasoning_images/1.png", "reference_txt": "B2"},
]  # fmt: skip
# Per role and sample: the answers in order (the last repeats).
ANSWERS = {
    "rise_consistency": {"R1": ["Final Score: 5"], "R3": ["Final Score: 5"]},
    "rise_reasoning": {"R1": ["**Final Score**: 5"], "R2": ["It melts.", "Final Score: 4"]},
    "rise_reasoning_image": {"R3": ["final score: 5"]},
    "rise_logical_consistency": {"R4": ["Final Score: 1"]},
    "rise_logical_reasoning": {"R4": ["Final Score: 0"]},
}


def test_rise_runs_and_scores_by_full_marks(fake_api: FakeAPI, tmp_path: Path) -> None:
    data = tmp_path / "rise" / "data"
    data.mkdir(parents=True)
    (data / "data_total.json").write_text(json.dumps(RECORDS))
    for record in RECORDS:
        fake_api.write_png(data / record["image"], fake_api.scene_image("yellow", "square"))
    reference = fake_api.scene_image("blue", "triangle")
    fake_api.write_png(data / "spatial_reasoning_images/r.png", reference)

    def answer(call: Call) -> str:
        if call.role == "rise_plausibility":
            return "Final Score: 5"
        key = re.search(r"(R\d)", call.user).group(1)
        script = ANSWERS[call.role][key]
        asked = sum(1 for c in fake_api.of(call.role) if key in c.user)
        return script[min(asked, len(script)) - 1]

    for role in (*ANSWERS, "rise_plausibility"):
        fake_api.answers[role] = answer
    run = tmp_path / "run"
    words = [
        f"benchmark.data_dir={tmp_path / 'rise'}",
        "benchmark.data_file=data/data_total.json",
        "benchmark.source=github",
        "benchmark.fetch=false",
        "judge.max_image_side=32",
        *fake_api.overrides("planner_only"),
    ]
    assert fake_api.run("rise", run, *words) == 0

    for record in RECORDS:
        assert (run / "images" / record["category"] / f"{record['index']}.png").is_file()
    assert all(len(call.images) == 1 for call in fake_api.of("planner"))  # the input image
    # 3 + 2 (consistency-free, one re-ask) + 3 + 2 calls; images shrunk to 32 px.
    counts = fake_api.count()
    assert sum(v for k, v in counts.items() if k.startswith("rise")) == 11
    assert "rise_consistency" in counts and counts["rise_reasoning"] == 3
    calls = fake_api.of("rise_consistency") + fake_api.of("rise_reasoning_image")
    assert all(image.shape == (32, 32, 3) for call in calls for image in call.images)
    spatial = next(c for c in fake_api.of("rise_consistency") if "R3" in c.user)
    red, _, blue = spatial.images[0][16, 16].tolist()
    assert blue > 200 and red < 60  # judged against the blue reference, not the yellow input

    results = json.loads((run / "results.json").read_text())
    rows = dict((name, values) for name, values in results["rows"])
    # Solved: t1 (5, 5, 5) and s1 (5, 5, 5); not: c1 (R 4), l1 (R 0 → 1). 2 of 4.
    assert results["overall"] == 50.0 and rows["overall"][:2] == [50.0, 4]
    assert rows["temporal_reasoning"][0] == 100.0 and rows["causal_reasoning"][0] == 0.0
    assert rows["spatial_reasoning"][0] == 100.0 and rows["logical_reasoning"][0] == 0.0
    # Secondary: 5, 0.2·5 + 0.8·4 = 4.2, 5, max(0.5·(0.3·5 + 0.7·1), 1) = 1.1; mean 3.825.
    assert rows["overall"][2] == pytest.approx(25 * (3.825 - 1))
    assert results["judge"]["requests_this_run"] == 11 and results["judge"]["unreadable"] == []

"""`itk eval wise_verified` with an API image generator (the generator alone, through the local
server's images endpoint): the paid-call count and cost, refused without --yes; the judge's
template replaced by a file; the verified range table (id 521 is space here, time under
legacy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import FakeAPI

PROMPTS = [(1, "Cultural knowledge", "V1 a kite"), (521, "Space", "V521 north of a river")]
PROMPTS += [(881, "Chemistry", "V881 rust on iron")]
VERDICTS = {"V1": "Score: 1", "V521": "**score**: 0", "V881": "<think>hm</think>\n1"}


def test_api_generator_paid_calls_and_verified_ranges(
    fake_api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    data = tmp_path / "wise" / "data_verified"
    data.mkdir(parents=True)
    records = [
        {"prompt_id": i, "Category": c, "Subcategory": "x", "Prompt": p, "Explanation": "e"}
        for i, c, p in PROMPTS
    ]
    (data / "merge.json").write_text(json.dumps(records))
    fake_api.answers["wise_verified"] = lambda call: VERDICTS[call.user.split()[0]]
    # The judge's template replaced by a file (as a user would point at the official text).
    template = tmp_path / "official.txt"
    template.write_text("role: wise_verified\n=== system ===\nOur stand-in.\n=== user ===\n$prompt")
    fake_api.roles["Our stand-in."] = "wise_verified"
    words = [
        f"benchmark.data_dir={tmp_path / 'wise'}",
        "benchmark.fetch=false",
        *fake_api.overrides("generator_alone", api_generator=True),
        "generator.size=48x48",
        "costs.usd_per_call.generator=0.04",
        "costs.usd_per_call.judge=0.01",
        f"judge.templates.wise_verified={template}",
    ]
    run = tmp_path / "run"

    assert fake_api.run("wise_verified", run, *words, yes=False) == 2
    err = capsys.readouterr().err
    assert "generator calls: 3 — PAID: OpenAIImageGenerator gpt-image-1" in err
    assert "judge calls: 3 to 9 — PAID" in err
    # 3 renders at $0.04, 3 to 9 judge calls (re-asks of unreadable answers) at $0.01.
    assert "estimated cost: $0.15 to $0.21" in err and "rerun with --yes" in err
    assert fake_api.count() == {} and not (run / "images").exists()
    with monkeypatch.context() as unset:
        unset.delenv("ITK_TEST_HARNESS_KEY")
        assert fake_api.run("wise_verified", run, *words) == 2
    assert "set the API key variable(s) first: $ITK_TEST_HARNESS_KEY (generator)" in (
        capsys.readouterr().err
    )

    assert fake_api.run("wise_verified", run, *words, "confirm_paid_calls=false", yes=False) == 0
    assert fake_api.count() == {"images": 3, "wise_verified": 3}
    assert [c.texts[0] for c in fake_api.of("wise_verified")] == ["Our stand-in."] * 3
    assert fake_api.image_calls[0] == {
        "model": "gpt-image-1", "prompt": "V1 a kite", "n": 1, "size": "48x48",
    }  # fmt: skip
    assert sorted(p.name for p in (run / "images").iterdir()) == ["1.png", "521.png", "881.png"]
    results = json.loads((run / "results.json").read_text())
    rows = dict((name, values) for name, values in results["rows"])
    assert rows["culture"] == [1.0, 1] and rows["space"] == [0.0, 1]
    assert rows["chemistry"] == [1.0, 1] and rows["time"] == [None, 0]
    assert results["metric"] == "WiScore (verified)"
    assert results["generation"]["calls"] == {"planner": 0, "generator": 3, "critic": 0}

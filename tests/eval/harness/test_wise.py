"""`itk eval wise` end to end on the testbed generator, with the planner, critic and judge served
by a local OpenAI-compatible server: the official layout, unreadable answers asked again then
left out, the figures by hand, a resumed run that asks and renders nothing twice, the gallery in
Chromium, and the comparison of two systems."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from itk_rl.cli import main

if TYPE_CHECKING:
    from conftest import FakeAPI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

LEGACY_FILES = {
    "cultural_common_sense.json": [
        (1, "Cultural knowledge", "P1 a <b>lantern</b> festival"),
        (2, "Cultural knowledge", "P2 a tea ceremony"),
    ],
    "spatio-temporal_reasoning.json": [(401, "Time", "P401 a tree after ten winters")],
    "natural_science.json": [(901, "Chemistry", "P901 copper in a flame")],
}
GRADES = {
    "P1": ["Consistency: 2\nRealism: 2\nAesthetic Quality: 2"],
    "P2": ["I cannot tell.", "**Consistency:** 1\n**Realism:** 2\n**Aesthetic Quality:** 0"],
    "P401": ["no grades here"] * 3,
    "P901": ["Consistency: 0\nRealism: 1\nAesthetic Quality: 1"],
}


def write_legacy(root: Path) -> None:
    folder = root / "WISE_legacy" / "data"
    folder.mkdir(parents=True)
    for name, rows in LEGACY_FILES.items():
        records = [
            {
                "prompt_id": pid,
                "Category": category,
                "Subcategory": "x",
                "Prompt": prompt,
                "Explanation": f"what {prompt.split()[0]} must show",
            }
            for pid, category, prompt in rows
        ]
        (folder / name).write_text(json.dumps(records))


def scripted_grades(fake: FakeAPI) -> None:
    """Each prompt's answers in order (the last one repeats)."""

    def answer(call) -> str:
        key = re.search(r"Prompt: (P\d+)", call.user).group(1)
        asked = sum(1 for c in fake.of("wise_legacy") if key in c.user)
        return GRADES[key][min(asked, len(GRADES[key])) - 1]

    fake.answers["wise_legacy"] = answer


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write_legacy(tmp_path / "wise")
    return tmp_path / "wise"


def overrides(fake: FakeAPI, data: Path, system: str = "interleave") -> list[str]:
    return [f"benchmark.data_dir={data}", "benchmark.fetch=false", *fake.overrides(system)]


def test_wise_runs_scores_and_resumes(fake_api: FakeAPI, data: Path, tmp_path: Path, capsys):
    scripted_grades(fake_api)
    run = tmp_path / "run"
    assert fake_api.run("wise", run, *overrides(fake_api, data)) == 0

    assert sorted(p.name for p in (run / "images").iterdir()) == [
        "1.png", "2.png", "401.png", "901.png",
    ]  # fmt: skip
    assert fake_api.count() == {"planner": 4, "critic": 4, "wise_legacy": 7}
    judged = fake_api.of("wise_legacy")[0]
    assert len(judged.images) == 1 and "what P" in judged.user  # the explanation is shown
    results = json.loads((run / "results.json").read_text())
    rows = dict((name, values) for name, values in results["rows"])
    # culture: (1.0 + (0.7·1 + 0.2·2)/2) / 2 = (1.0 + 0.55) / 2; chemistry (0.2 + 0.1) / 2;
    # P401 stayed unreadable after three tries: left out, so time has no sample.
    assert rows["culture"] == [pytest.approx(0.775), 2]
    assert rows["chemistry"] == [pytest.approx(0.15), 1]
    assert rows["time"] == [None, 0] and results["overall"] is None
    assert results["judge"]["unreadable"] == ["401/score"]
    assert results["judge"]["requests_this_run"] == 7
    assert results["generation"]["calls"] == {"planner": 4, "generator": 4, "critic": 4}
    assert "every prompt id 1–1000" in results["notes"][0]
    err = capsys.readouterr().err
    assert "| culture | 0.77 | 2 |" in err and "PAID" in err

    # Resumed: nothing asked, nothing rendered. A deleted output is rendered again, and being
    # the same image, its judge answer comes from the cache.
    before = fake_api.count()
    (run / "images" / "901.png").unlink()
    lines = (run / "generation.jsonl").read_text().count("\n")
    assert fake_api.run("wise", run, *overrides(fake_api, data)) == 0
    assert fake_api.count() - before == {"planner": 1, "critic": 1}
    assert (run / "generation.jsonl").read_text().count("\n") == lines + 1
    assert fake_api.run("wise", run, *overrides(fake_api, data)) == 0
    assert fake_api.count() - before == {"planner": 1, "critic": 1}
    again = json.loads((run / "results.json").read_text())
    assert again["rows"] == results["rows"] and again["judge"]["from_cache"] == 4

    # Another system in the same folder is refused; compare puts two runs in one table.
    assert fake_api.run("wise", run, *overrides(fake_api, data, "generator_alone")) == 2
    assert "holds a run of another configuration" in capsys.readouterr().err
    alone = tmp_path / "alone"
    assert fake_api.run("wise", alone, *overrides(fake_api, data, "generator_alone")) == 0
    # Its own folder, its own cache: every image judged again (P2's script is past its
    # unreadable answer now: 1 + 1 + 3 + 1 requests).
    assert fake_api.count() - before == {"planner": 1, "critic": 1, "wise_legacy": 6}
    assert main(["eval", "compare", str(run), str(alone), "--out", str(tmp_path / "c.md")]) == 0
    table = capsys.readouterr().out
    assert "| group | interleave (run) | generator_alone (alone) |" in table
    assert "| culture | 0.77 | 0.77 |" in table
    assert (tmp_path / "c.md").read_text() == table

    if CHROMIUM is not None:
        check_gallery(run, tmp_path)


PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: Array.from(document.images).map((i) => i.complete && i.naturalWidth > 0),
    samples: Array.from(document.querySelectorAll("section.sample")).map((s) => s.dataset.key),
    bold: document.querySelectorAll("b").length,
    overall: document.getElementById("overall").textContent});
  document.body.appendChild(out);
});
</script>"""


def check_gallery(run: Path, tmp_path: Path) -> None:
    """Every image of the gallery loads in a real browser; texts are escaped."""
    page = (run / "gallery.html").read_text()
    probe = run / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
        "--dump-dom", probe.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, done.stdout[-2000:]
    seen = json.loads(
        found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    assert seen["samples"] == ["1", "2", "401", "901"]
    assert seen["images"] == [True] * 4 and seen["bold"] == 0
    assert seen["overall"] == "WiScore (legacy): n/a"

"""A testbed run's page in a real headless browser (Debian's chromium, installed by
scripts/install_chromium.sh): every image loads, the steps appear in order, and a screenshot
is taken (kept in the test's tmp folder: look at it when changing the page)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from itk_rl.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (scripts/install_chromium.sh installs Debian's; it needs "
    "root and the package registry)",
)

REQUEST = (
    "Show <b>step</b> by step: draw a crimson disc on the left, add a big azure box in the "
    "middle, then make the disc golden"
)

# Run by the browser once the page has loaded: opens every attempt list, then writes what it
# sees into the DOM, where --dump-dom shows it.
PROBE = """
<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const images = Array.from(document.images).map((img) => ({
    src: img.getAttribute("src"), ok: img.complete && img.naturalWidth > 0,
  }));
  const steps = Array.from(document.querySelectorAll("section.step")).map((s) => ({
    step: Number(s.dataset.step), state: s.dataset.state,
    title: s.querySelector("h2").textContent,
  }));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images, steps,
    status: document.getElementById("status").textContent,
    bold: document.querySelectorAll("b").length});
  document.body.appendChild(out);
});
</script>
"""


def chromium(*args: str, user_data, timeout: float = 60) -> str:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
        f"--user-data-dir={user_data}",
        "--virtual-time-budget=5000",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_page_loads_every_image_and_shows_the_steps_in_order(tmp_path):
    run = tmp_path / "run"
    assert main(["generate", REQUEST, "--out", str(run)]) == 0
    page = (run / "index.html").read_text()
    probe = run / "probe.html"  # beside the page, so its relative image links resolve the same
    probe.write_text(page.replace("</body>", PROBE + "</body>"))

    dom = chromium("--dump-dom", probe.as_uri(), user_data=tmp_path / "profile")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, dom[-2000:]
    result = json.loads(
        found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )

    assert result["status"] == "finished: 3 step(s)"
    assert [s["step"] for s in result["steps"]] == [1, 2, 3]
    assert [s["state"] for s in result["steps"]] == ["done"] * 3
    assert result["steps"][0]["title"].startswith("Step 1 · Draw a crimson disc")
    # Every final image and every attempt image: 3 steps, each misrendered once, then fixed.
    assert len(result["images"]) == 3 + 6
    assert all(image["ok"] for image in result["images"]), result["images"]
    assert result["bold"] == 0  # user and model text is escaped, never markup

    shot = tmp_path / "page.png"
    chromium(
        f"--screenshot={shot}",
        "--window-size=1000,2400",
        probe.as_uri(),
        user_data=tmp_path / "profile",
    )
    assert shot.stat().st_size > 10_000

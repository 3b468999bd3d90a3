"""The interleaved result as one static HTML page: each step's text and final image, in order.

Under each step, folded (`<details>`), every attempt: its image, prompt, seed, the critic's
verdict, reasoning and refined prompt, and any error. Steps the run has not reached yet are
listed as pending, so a page written mid-run (or left by an interrupted one) shows how far it
got. The page is self-contained (inline CSS, no scripts) and links images by relative path;
every model text goes through `html.escape`, because model output is untrusted.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from itk_rl.formats import Attempt, Step, StepRecord, Trajectory

RUNNING, FINISHED, STOPPED = "running", "finished", "stopped"

PIXEL_ART_BELOW = 256
"""Images smaller than this (testbed renders) are scaled up without smoothing."""

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d1d1f; background: #fff; line-height: 1.45; }
h1 { font-size: 1.3rem; margin-bottom: .3rem; }
h2 { font-size: 1.1rem; margin: 0 0 .4rem; }
.request { font-size: 1.1rem; white-space: pre-wrap; }
.status { padding: .45rem .8rem; border-radius: .4rem; font-weight: 600; }
.status.running { background: #fff6d6; } .status.finished { background: #e3f6e5; }
.status.stopped { background: #fde2e1; }
.notes { color: #555; font-size: .85rem; }
.step { border-top: 1px solid #ddd; padding: 1rem 0; }
.step.pending { color: #888; }
.text { white-space: pre-wrap; }
.prompt, .meta { color: #555; font-size: .9rem; }
figure { margin: .5rem 0; }
img { border: 1px solid #ccc; background: #fafafa; }
img.final { width: 320px; max-width: 100%; }
img.attempt { width: 160px; max-width: 100%; }
img.input { width: 160px; }
img.pixel { image-rendering: pixelated; }
.attempts ol { padding-left: 1.2rem; }
.try { display: flex; gap: 1rem; margin: .6rem 0; align-items: flex-start; }
.try img { flex: none; }
.try dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: .15rem .6rem;
              font-size: .9rem; }
.try dt { color: #666; } .try dd { margin: 0; white-space: pre-wrap; }
.kept { outline: 3px solid #3a9d4a; }
.verdict-accepted { color: #1e7b32; } .verdict-rejected { color: #b3261e; }
.verdict-error { color: #b3261e; font-weight: 600; }
.error { color: #b3261e; white-space: pre-wrap; }
pre { white-space: pre-wrap; background: #f5f5f7; padding: .6rem; font-size: .85rem; }
"""


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands: `state` is running, finished or stopped; `message` says it in words."""

    state: str
    message: str
    step: int | None = None
    num_steps: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "message": self.message,
            "step": self.step,
            "num_steps": self.num_steps,
        }


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_page(
    trajectory: Trajectory | None,
    status: RunStatus,
    image_name: Callable[[np.ndarray], str],
    request_text: str,
    notes: Mapping[str, str] | None = None,
) -> str:
    """The whole page. `image_name(image)` stores an image and returns its relative path."""

    def img(image: np.ndarray, css: str, alt: str) -> str:
        pixel = " pixel" if max(image.shape[:2]) < PIXEL_ART_BELOW else ""
        return f'<img class="{css}{pixel}" src="{_e(image_name(image))}" alt="{_e(alt)}">'

    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>itk · {_e(request_text[:80])}</title>",
    ]
    if status.state == RUNNING:
        parts.append('<meta http-equiv="refresh" content="5">')
    parts.append(f"<style>{_CSS}</style></head><body>\n<header>")
    parts.append(f'<h1>Request</h1><p class="request">{_e(request_text)}</p>')
    if trajectory is not None:
        for i, image in enumerate(trajectory.request.images, start=1):
            parts.append(img(image, "input", f"input image {i}"))
    parts.append(f'<p class="status {_e(status.state)}" id="status">{_e(status.message)}</p>')
    if notes:
        items = " · ".join(f"<span>{_e(k)}: {_e(v)}</span>" for k, v in notes.items())
        parts.append(f'<p class="notes">{items}</p>')
    parts.append("</header>")
    if trajectory is not None:
        parts.append(_planner_section(trajectory))
        parts.append(_steps(trajectory, status, img))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _planner_section(trajectory: Trajectory) -> str:
    planner = trajectory.planner
    if not planner.raw:
        return ""
    rows = []
    if planner.error:
        rows.append(f'<p class="error">Unusable: {_e(planner.error)}</p>')
    if planner.repairs:
        rows.append(f"<p>Repairs: {_e('; '.join(planner.repairs))}</p>")
    if planner.think:
        rows.append(f'<p class="text">{_e(planner.think)}</p>')
    rows.append(f"<pre>{_e(planner.raw)}</pre>")
    return f'<details class="planner"><summary>Planner output</summary>{"".join(rows)}</details>'


def _steps(trajectory: Trajectory, status: RunStatus, img: Callable[..., str]) -> str:
    plan = trajectory.plan
    planned: tuple[Step, ...] = plan.steps if plan is not None else ()
    out = ["<main>"]
    for index, step in enumerate(planned):
        record = trajectory.steps[index] if index < len(trajectory.steps) else None
        out.append(_step(step, record, status, img))
    out.append("</main>")
    return "\n".join(out)


def _step_state(step: Step, record: StepRecord | None, status: RunStatus) -> str:
    if record is None:
        return "pending"
    if record.final is not None and record.final.image is not None:
        return "done"
    if status.state == RUNNING and status.step == step.step_number:
        return "running"
    return "failed"


def _step(step: Step, record: StepRecord | None, status: RunStatus, img: Callable) -> str:
    state = _step_state(step, record, status)
    n = step.step_number
    head = f"Step {n} · {step.step_name}" if step.step_name else f"Step {n}"
    out = [
        f'<section class="step {state}" id="step-{n}" data-step="{n}" data-state="{state}">',
        f"<h2>{_e(head)}</h2>",
        f'<p class="text">{_e(step.display_text)}</p>',
    ]
    final = record.final if record is not None else None
    if final is not None and final.image is not None:
        out.append(f"<figure>{img(final.image, 'final', f'step {n}, final image')}</figure>")
    elif state == "pending":
        out.append('<p class="meta">pending</p>')
    elif state == "running":
        out.append('<p class="meta">rendering…</p>')
    else:
        out.append('<p class="error">no image: every attempt failed</p>')
    out.append(f'<p class="prompt">Prompt: {_e(step.prompt)}</p>')
    if record is not None and record.attempts:
        kept = record.final_attempt
        summary = f"Attempts ({len(record.attempts)})"
        if kept is not None:
            summary += f" · kept attempt {kept + 1}"
        items = [_attempt(i, a, i == kept, n, img) for i, a in enumerate(record.attempts)]
        out.append(
            f'<details class="attempts"><summary>{_e(summary)}</summary><ol>'
            + "".join(items)
            + "</ol></details>"
        )
    out.append("</section>")
    return "\n".join(out)


def _verdict(attempt: Attempt) -> tuple[str, str]:
    """(css class, words) for what the critic said."""
    parsed = attempt.critic
    if attempt.image is None:
        return "error", "render failed"
    if attempt.error:
        return "error", "not reviewed (critic failed)"
    if parsed is None:
        return "none", "not reviewed"
    if parsed.value is None:
        return "error", "critic output unreadable"
    return ("accepted", "accepted") if parsed.value.success else ("rejected", "rejected")


def _attempt(index: int, attempt: Attempt, kept: bool, step: int, img: Callable) -> str:
    css, words = _verdict(attempt)
    rows = [
        ("Prompt", _e(attempt.prompt)),
        ("Seed", _e(attempt.seed)),
        ("Critic", f'<span class="verdict-{css}">{_e(words)}</span>'),
    ]
    parsed = attempt.critic
    if parsed is not None:
        verdict = parsed.value
        if verdict is not None and verdict.reasoning:
            rows.append(("Reasoning", _e(verdict.reasoning)))
        if verdict is not None and not verdict.success:
            rows.append(("Refined prompt", _e(verdict.refine_prompt or "(empty: prompt reused)")))
        if parsed.repairs:
            rows.append(("Repairs", _e("; ".join(parsed.repairs))))
        if verdict is None:
            rows.append(("Critic error", _e(parsed.error)))
            rows.append(("Raw output", f"<pre>{_e(parsed.raw)}</pre>"))
    if attempt.score is not None:
        s = attempt.score
        rows.append(("Score", _e(f"SC {s.semantics:.1f} · PQ {s.quality:.1f} · O {s.overall:.1f}")))
    if attempt.error:
        rows.append(("Error", f'<span class="error">{_e(attempt.error)}</span>'))
    cells = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    css_img = "attempt kept" if kept else "attempt"
    alt = f"step {step}, attempt {index + 1}"
    picture = (
        img(attempt.image, css_img, alt)
        if attempt.image is not None
        else '<p class="error">no image</p>'
    )
    return f'<li class="try {css}" data-attempt="{index + 1}">{picture}<dl>{cells}</dl></li>'

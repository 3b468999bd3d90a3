"""`RUN/gallery.html`: every sample with its prompt, input images, the system's text and
images, its score, and each judge answer (the parsed value, the raw text folded).

Images are linked, not copied: outputs relative to the run folder, inputs by a relative path
into the data folder (so the page works where the run and the data stay put). Every text goes
through `html.escape`.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from itk_rl.eval.harness.core import Answer, Benchmark, Sample, fmt
from itk_rl.formats.files import write_atomic

GALLERY = "gallery.html"
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d1d1f; line-height: 1.45; }
section.sample { border-top: 1px solid #ddd; padding: .8rem 0; }
h2 { font-size: 1.05rem; margin: .2rem 0; }
.group { color: #666; font-weight: normal; }
.prompt, .text { white-space: pre-wrap; background: #f7f7f9; padding: .4rem .6rem;
                 margin: .3rem 0; }
.images img { width: 200px; height: auto; margin: .2rem; border: 1px solid #ccc; }
.score { font-weight: 600; }
table { border-collapse: collapse; font-size: .88rem; margin: .4rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .45rem; text-align: left; vertical-align: top; }
th { background: #f5f5f7; }
pre { white-space: pre-wrap; margin: 0; font-size: .82rem; }
.note { color: #555; font-size: .9rem; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _src(path: Path, run: Path) -> str:
    """A link to `path` from the page: relative to the run folder (POSIX separators)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(run).resolve())).as_posix()


def _images(paths: Sequence[Path], run: Path, label: str) -> str:
    if not paths:
        return ""
    tags = "".join(
        f'<img src="{_e(_src(p, run))}" alt="{_e(label)} {i + 1}" loading="lazy">'
        for i, p in enumerate(paths)
    )
    return f'<div class="images {_e(label)}"><span class="note">{_e(label)}:</span> {tags}</div>'


def _value(value: Any) -> str:
    if value is None:
        return "unreadable"
    if isinstance(value, (tuple, list)):
        return "; ".join(str(v) for v in value)
    return str(value)


def _answers(answers: Mapping[str, Answer]) -> str:
    if not answers:
        return '<p class="note">not judged</p>'
    rows = []
    for name, answer in answers.items():
        origin = (
            "cache"
            if answer.tries == 0
            else f"{answer.tries} tr{'y' if answer.tries == 1 else 'ies'}"
        )
        raw = answer.error if answer.error else (answer.text or "")
        rows.append(
            f"<tr><td>{_e(name)}</td><td>{_e(_value(answer.value))}</td><td>{_e(origin)}</td>"
            f"<td><details><summary>answer</summary><pre>{_e(raw)}</pre></details></td></tr>"
        )
    head = "<tr><th>judge call</th><th>value read</th><th>asked</th><th>raw</th></tr>"
    return f'<table class="answers">{head}{"".join(rows)}</table>'


def _generation(record: Mapping[str, Any] | None) -> str:
    """The system's run on a sample: its steps' texts and attempts, or why it failed."""
    if record is None:
        return ""
    if not record.get("ok"):
        return f'<p class="note">generation failed: {_e(record.get("error"))}</p>'
    texts = [t for t in record.get("texts", []) if t]
    steps = "".join(f"<li>{_e(t)}</li>" for t in texts)
    attempts = ", ".join(str(a) for a in record.get("attempts", []))
    return (
        f'<p class="note">{len(record.get("attempts", []))} step(s), attempts per step: '
        f"{_e(attempts)}; {_e(record.get('seconds'))} s</p>"
        + (f'<ol class="steps">{steps}</ol>' if steps else "")
    )


def write_gallery(
    run: Path,
    bench: Benchmark,
    samples: Sequence[Sample],
    answers: Mapping[str, Mapping[str, Answer]],
    results: Mapping[str, Any],
    per_sample: Mapping[str, str],
    generation_log: Mapping[str, Mapping[str, Any]],
) -> Path:
    """Write the gallery of `samples` into the run folder and return its path. The step texts
    come from `generation_log` (a benchmark whose output is an image alone keeps none)."""
    run = Path(run)
    digits = results["digits"]
    parts = [
        f"<h1>{_e(results['benchmark'])}: {_e(results['system'])}</h1>",
        f'<p id="overall" class="score">{_e(results["metric"])}: '
        f"{_e(fmt(results['overall'], digits))}</p>",
        '<p class="note">Figures and calls: <a href="results.md">results.md</a>, '
        '<a href="results.json">results.json</a>.</p>',
    ]
    for sample in samples:
        view = bench.view(run, sample)
        output = (
            '<p class="note">no output</p>'
            if view is None
            else (f'<div class="text">{_e(view.text)}</div>' if view.text else "")
            + _images(view.images, run, "output")
        )
        parts.append(
            f'<section class="sample" data-key="{_e(sample.key)}">'
            f'<h2>{_e(sample.key)} <span class="group">{_e(sample.group)}</span></h2>'
            f'<div class="prompt">{_e(sample.prompt)}</div>'
            f"{_images(sample.input_images, run, 'input')}"
            f"{_generation(generation_log.get(sample.key))}{output}"
            f'<p class="score">{_e(per_sample.get(sample.key, ""))}</p>'
            f"{_answers(answers.get(sample.key, {}))}</section>"
        )
    page = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{_e(results['benchmark'])} gallery</title><style>{_CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    path = run / GALLERY
    write_atomic(path, page)
    return path

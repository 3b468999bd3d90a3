"""The build report: what a person checks before training on a dataset.

OUT/report/index.html            counts per split, label balance, failures, the plot, examples
OUT/report/counts.json           the same counts as build.json["counts"]
OUT/report/score_histograms.png  judge scores of all attempts, per-step variance with the
                                 split thresholds, and the scores in each critic dataset
OUT/report/images/*.png          the examples' images
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from itk_rl.data.filters import FilterConfig, score_variance
from itk_rl.data.splits import CriticCandidate, Side
from itk_rl.formats.files import write_atomic
from itk_rl.formats.images import ImageFolder

REPORT, COUNTS, PLOT, IMAGES = "index.html", "counts.json", "score_histograms.png", "images"


def plot_histograms(sides: Mapping[str, Side], filters: FilterConfig, path: Path) -> Path:
    """Three panels: O of every judged attempt (first vs later attempts), step score variance
    with `var_low`/`var_high`, and O of the Critic-SFT vs Critic-RL records (all sides)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outcomes = [o for side in sides.values() for o in side.outcomes]
    first = [o.scores[0] for o in outcomes]
    later = [s for o in outcomes for s in o.scores[1:]]
    variances = [score_variance(o.scores) for o in outcomes]
    sft = [_overall(c) for side in sides.values() for c in side.critic_sft]
    rl = [_overall(c) for side in sides.values() for c in side.critic_rl]
    bins = np.linspace(0, 10, 21)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].hist([first, later], bins=bins, label=["first attempt", "later attempts"])
    axes[0].set(title="Judge score O of every attempt", xlabel="O (0-10)", ylabel="attempts")
    axes[1].hist(variances, bins=20)
    for value, name in ((filters.var_low, "var_low"), (filters.var_high, "var_high")):
        axes[1].axvline(value, color="k", linestyle="--")
        axes[1].annotate(name, (value, 0), rotation=90, va="bottom")
    axes[1].set(title="Score variance per step", xlabel="variance of O", ylabel="steps")
    axes[2].hist([sft, rl], bins=bins, label=["Critic-SFT", "Critic-RL"])
    axes[2].set(title="Judge score O of critic records", xlabel="O (0-10)", ylabel="records")
    for axis in (axes[0], axes[2]):
        axis.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _overall(candidate: CriticCandidate) -> float:
    evaluation = candidate.sample.evaluation
    return float(np.sqrt(evaluation.semantics * evaluation.quality))


def _table(counts: Mapping[str, Mapping[str, Any]]) -> str:
    """Rows = datasets, columns = their count keys."""
    columns = sorted({key for row in counts.values() for key in row})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *columns])
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns)
        + "</tr>"
        for name, row in counts.items()
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _img(images: ImageFolder, image: np.ndarray) -> str:
    return f'<img src="{IMAGES}/{images.put(image)}" width="96">'


def _examples(side: Side, images: ImageFolder, count: int) -> str:
    parts = []
    for title, items in (("Critic-SFT", side.critic_sft), ("Critic-RL", side.critic_rl)):
        parts.append(
            f"<h3>{title}</h3><table><tr><th>before</th><th>after</th><th>record</th></tr>"
        )
        for c in items[:count]:
            s = c.sample
            text = (
                f"trajectory {c.trajectory_id} step {c.step} attempt {c.attempt}<br>"
                f"origin prompt: {html.escape(s.origin_prompt)}<br>"
                f"used prompt: {html.escape(s.rewritten_prompt)}<br>"
                f"evaluation: {html.escape(json.dumps(s.evaluation.to_dict()))}"
            )
            if c.target is not None and c.bin == "sft":
                text += f"<pre>{html.escape(c.target)}</pre>"
            after = _img(images, s.edited_image)
            parts.append(f"<tr><td>{_img(images, s.origin_image)}</td><td>{after}</td>")
            parts.append(f"<td>{text}</td></tr>")
        parts.append("</table>")
    parts.append("<h3>Planner-SFT</h3><table><tr><th>input</th><th>target</th></tr>")
    for pair in side.planner_sft[:count]:
        shown = "".join(
            f"<div>{html.escape(t)}<br>{_img(images, im)}</div>"
            for t, im in zip(pair.prefix_texts, pair.prefix_images, strict=True)
        )
        head = f"{html.escape(pair.id)}, cut {pair.cut}/{pair.num_steps}: "
        parts.append(f"<tr><td>{head}{html.escape(pair.request)}{shown}</td>")
        parts.append(f"<td><pre>{html.escape(pair.target)}</pre></td></tr>")
    parts.append("</table>")
    return "".join(parts)


def write_report(
    out: Path,
    summary: Mapping[str, Any],
    sides: Mapping[str, Side],
    filters: FilterConfig,
    num_examples: int = 3,
) -> Path:
    """Write the report folder (layout in the module docstring); returns its index.html."""
    folder = out / "report"
    counts = summary["counts"]
    write_atomic(folder / COUNTS, json.dumps(counts, indent=1) + "\n")
    plot_histograms(sides, filters, folder / PLOT)
    images = ImageFolder(folder / IMAGES)
    per_split = {
        f"{dataset} / {name}": counts["splits"][name][dataset]
        for dataset in ("critic_sft", "critic_rl", "planner_sft")
        for name in counts["splits"]
    }
    teacher = counts["teacher"]
    failures = teacher["failures_by_kind"] or {"none": 0}
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px}"
    body = [
        f"<html><head><meta charset='utf-8'><title>itk_rl data build</title><style>{style}"
        "</style></head><body>",
        f"<h1>Data build: {html.escape(str(summary['recipe']))}</h1>",
        f"<p>{html.escape(str(summary['status']))}; {summary['build_s']:.1f} s</p>",
        "<h2>Datasets (rows and label balance)</h2>",
        _table(per_split),
        "<h2>Teacher trajectories</h2>",
        _table({"counts": {k: v for k, v in teacher.items() if k != "failures_by_kind"}}),
        _table({"failures": failures}),
        "<h2>Steps by filter bin</h2>",
        _table({name: side["steps_by_bin"] for name, side in counts["splits"].items()}),
        f'<h2>Scores</h2><img src="{PLOT}">',
        "<h2>Examples (train)</h2>",
        _examples(sides["train"], images, num_examples) if "train" in sides else "",
        "</body></html>",
    ]
    path = folder / REPORT
    write_atomic(path, "\n".join(body))
    return path

"""The main job's report: one static HTML page with PNG plots, beside the evaluation's run folders.

    OUT/report/index.html        training curves, the comparison (chart and table), examples
    OUT/report/curves_<name>.png one per training run's metrics.jsonl (losses; rewards and accuracy)
    OUT/report/comparison.png    each metric per system, with 95 % CI error bars
    OUT/report/eval.json         `EvalResult.to_dict()`: every number the page shows and more
    OUT/runs/…                   the run pages `evaluate_testbed` wrote; the examples link there

Every text goes through `html.escape`; plots use matplotlib's `Figure` (Agg, no pyplot state).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from itk_rl.eval.metrics import Estimate, EvalResult, SystemResult
from itk_rl.formats.files import write_atomic

REPORT = "report"
SHOWN = (
    "final_score",
    "scene_accuracy",
    "task_accuracy",
    "verdict_accuracy",
    "reasoning_accuracy",
    "improvement_rate",
)
TITLES = {
    "final_score": "judge score per step (0–10)",
    "first_score": "first-attempt score per step",
    "scene_accuracy": "steps with the right scene",
    "task_accuracy": "tasks with the right final scene",
    "verdict_accuracy": "critic verdict accuracy",
    "reasoning_accuracy": "critic sees the image right",
    "improvement_rate": "refinements that raise the score",
    "steps_improved": "steps improved by refinement",
}
ONE_RUN = (
    "One run shows how these checkpoints compare on the held-out tasks (the intervals cover the "
    "choice of tasks); it cannot show that training helps: retrained with another seed or on "
    "another machine, the critics change, which these intervals do not cover (the same job "
    "gave GRPO - SFT +0.63 and -0.10 per step on two machines; several seeds: "
    "benchmarks/learning_seeds.py)."
)
"""What one run's figures can and cannot show; the report and the main job's summary say it."""
PANELS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("loss", lambda key: key.endswith("loss")),
    ("rewards and accuracy", lambda key: key.startswith("reward/") and "failure" not in key),
)
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d1d1f; line-height: 1.45; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f5f5f7; }
img.plot { max-width: 100%; border: 1px solid #eee; }
img.step { width: 96px; image-rendering: pixelated; border: 1px solid #ccc; }
.note { color: #555; font-size: .9rem; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(estimate: Estimate) -> str:
    if estimate.value is None:
        return "n/a"
    return f"{estimate.value:.3g} [{estimate.low:.3g}, {estimate.high:.3g}]"


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The records of a metrics.jsonl; unreadable lines (a run killed mid-write) are skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def plot_curves(records: Sequence[Mapping[str, float]], title: str, path: Path) -> bool:
    """One panel per kind of key present (losses; rewards and accuracy); False if none is."""
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))})
    panels = [(name, [k for k in keys if pick(k)]) for name, pick in PANELS]
    panels = [(name, chosen) for name, chosen in panels if chosen]
    if not panels:
        return False
    figure = Figure(figsize=(6 * len(panels), 3.6), layout="constrained")
    grid = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (name, chosen) in zip(grid, panels, strict=True):
        for key in chosen:
            steps = [r["step"] for r in records if isinstance(r.get(key), (int, float))]
            values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
            axes.plot(steps, values, marker="." if len(steps) < 40 else None, label=key)
        axes.set(title=f"{title}: {name}", xlabel="step")
        axes.legend(fontsize=7)
    figure.savefig(path, dpi=100)
    return True


def plot_comparison(systems: Sequence[SystemResult], path: Path) -> None:
    """A bar per system for each metric, with its 95 % CI as error bars; n/a bars are left out."""
    figure = Figure(figsize=(3.2 * len(SHOWN), 3.6), layout="constrained")
    for axes, metric in zip(figure.subplots(1, len(SHOWN)), SHOWN, strict=True):
        for x, system in enumerate(systems):
            e = system.metrics[metric]
            if e.value is None:
                axes.text(x, 0, "n/a", ha="center", va="bottom", fontsize=8)
                continue
            error = [[e.value - e.low], [e.high - e.value]]
            axes.bar(x, e.value, yerr=error, capsize=4, color=f"C{x}")
        axes.set_xticks(range(len(systems)), [s.name for s in systems], rotation=30, fontsize=8)
        axes.set_title(TITLES[metric], fontsize=9)
        axes.set_ylim(0, 10.5 if metric == "final_score" else 1.05)
    figure.savefig(path, dpi=100)


def _table(result: EvalResult) -> str:
    metrics = list(TITLES)
    deltas = sorted({k for s in result.systems for k in s.deltas})
    counts = ("steps", "critic_calls", "parse_failures", "refinements", "stopped_runs")
    head = ["system", "critic", *(TITLES[m] for m in metrics)]
    compared = sorted({(s.compared_with, m) for s in result.systems for m in s.comparison})
    head += [f"Δ {m} vs {result.settings['baseline']}" for m in deltas]
    head += [f"Δ {m} vs {other}" for other, m in compared] + list(counts)
    rows = []
    for s in result.systems:
        cells = [s.name, s.description, *(_fmt(s.metrics[m]) for m in metrics)]
        cells += [_fmt(s.deltas[m]) if m in s.deltas else "—" for m in deltas]
        cells += [
            _fmt(s.comparison[m]) if s.compared_with == other else "—" for other, m in compared
        ]
        cells += [str(s.counts[c]) for c in counts]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table class="comparison"><tr>{header}</tr>{"".join(rows)}</table>'


def pick_examples(result: EvalResult, count: int = 3) -> list[int]:
    """Tasks where the systems differ most (spread of their mean final score), ties by index."""
    systems = result.systems

    def spread(index: int) -> float:
        means = [
            sum(s.final_score for s in system.tasks[index].steps) / system.tasks[index].num_steps
            for system in systems
        ]
        return max(means) - min(means)

    indices = range(len(systems[0].tasks))
    return sorted(indices, key=lambda i: (-spread(i), i))[:count]


def _example(result: EvalResult, index: int) -> str:
    """One task side by side: per system its final image and score per step, and its page."""
    first = result.systems[0].tasks[index]
    rows = []
    for system in result.systems:
        task = system.tasks[index]
        cells = [f'<a href="../{_e(task.run)}/index.html">{_e(system.name)}</a>']
        for step in task.steps:
            image = f'<img class="step" src="../{_e(step.image)}" alt="">' if step.image else ""
            tries = len(step.attempts)
            cells.append(f"{image}<br>O {step.final_score:.1f} · {tries} attempt(s)")
        cells += ["(not reached)"] * (task.num_steps - len(task.steps))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>step {n}</th>" for n in range(1, first.num_steps + 1))
    return (
        f"<h3>Task {index}</h3><p>{_e(first.request)}</p>"
        f"<table><tr><th>system (run page)</th>{head}</tr>{''.join(rows)}</table>"
    )


def write_report(
    out_dir: str | Path, result: EvalResult, curves: Mapping[str, str | Path] | None = None
) -> Path:
    """Write OUT/report/ (layout in the module docstring) and return its index.html.

    `out_dir` is the folder `evaluate_testbed` wrote its runs into; `curves` names training
    runs' metrics.jsonl files (a missing file or one without known keys is noted, not fatal).
    """
    out = Path(out_dir)
    report = out / REPORT
    report.mkdir(parents=True, exist_ok=True)
    write_atomic(report / "eval.json", json.dumps(result.to_dict(), indent=1, allow_nan=False))
    sections = ["<h2>Training curves</h2>"]
    for name, source in (curves or {}).items():
        path = Path(source)
        records = read_metrics(path) if path.is_file() else []
        png = f"curves_{''.join(c if c.isalnum() else '_' for c in name)}.png"
        if records and plot_curves(records, name, report / png):
            sections.append(f'<h3>{_e(name)}</h3><img class="plot" src="{_e(png)}" alt="">')
        else:
            sections.append(f'<p class="note">{_e(name)}: no curves in {_e(path)}</p>')
    if not curves:
        sections.append('<p class="note">No training runs given.</p>')
    plot_comparison(result.systems, report / "comparison.png")
    settings = result.settings
    sections += [
        "<h2>Held-out comparison</h2>",
        f'<p class="note">{settings["num_tasks"]} held-out tasks, seed {settings["seed"]}; '
        f"success = judge overall ≥ {settings['success_threshold']}; 95 % CIs by bootstrap over "
        f"tasks ({settings['bootstrap_resamples']} resamples). Every system gets the "
        "ground-truth plan; they differ only in the critic.</p>",
        f'<p class="note"><strong>{_e(ONE_RUN)}</strong></p>',
        '<img class="plot" src="comparison.png" alt="comparison">',
        _table(result),
        '<p class="note">All numbers: <a href="eval.json">eval.json</a>.</p>',
        "<h2>Examples</h2>",
        *(_example(result, index) for index in pick_examples(result)),
    ]
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>itk_rl report</title>'
        f"<style>{_CSS}</style></head><body><h1>itk_rl: training and held-out evaluation</h1>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    index = report / "index.html"
    write_atomic(index, page)
    return index

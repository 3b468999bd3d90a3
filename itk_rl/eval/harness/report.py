"""A run's figures as `results.json` and `results.md`, and the comparison of runs of one
benchmark (one per system) as a Markdown table.

    RUN/results.json   benchmark, system, components, the table (overall, per category or task),
                       the benchmark module's full result, calls, failures, data provenance
    RUN/results.md     the same for reading
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from itk_rl.eval.harness.core import Scores, fmt
from itk_rl.eval.harness.judging import JudgeStats
from itk_rl.formats.files import write_atomic

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def build_results(
    *,
    benchmark: str,
    system: str,
    components: Mapping[str, str],
    scores: Scores,
    samples: int,
    outputs: int,
    generation_log: Mapping[str, Mapping[str, Any]],
    judge_calls: int,
    judge: JudgeStats,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything a reader or `itk eval compare` needs, as plain data. Generation calls and
    failures cover every sample's latest try (this run's or an earlier one's)."""
    calls: Counter = Counter()
    failed = {}
    for key, record in generation_log.items():
        calls.update(record.get("calls", {}))
        if not record.get("ok"):
            failed[key] = record.get("error")
    return {
        "benchmark": benchmark,
        "system": system,
        "components": dict(components),
        "metric": scores.metric,
        "overall": scores.overall,
        "columns": list(scores.columns),
        "rows": [[name, list(values)] for name, values in scores.rows],
        "digits": scores.digits,
        "notes": list(scores.notes),
        "official": scores.official,
        "samples": samples,
        "outputs": outputs,
        "generation": {"calls": dict(calls), "failed": failed},
        "judge": {
            "calls": judge_calls,
            "asked_this_run": judge.asked,
            "requests_this_run": judge.requests,
            "from_cache": judge.cached,
            "unreadable": judge.unreadable,
            "failed": judge.failed,
        },
        "data": dict(provenance),
    }


def write_results(run: Path, results: Mapping[str, Any]) -> tuple[Path, Path]:
    run = Path(run)
    write_atomic(run / RESULTS_JSON, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_atomic(run / RESULTS_MD, markdown(results))
    return run / RESULTS_JSON, run / RESULTS_MD


def table(results: Mapping[str, Any]) -> str:
    """The run's table in Markdown."""
    digits = results["digits"]
    head = ["group", *results["columns"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, values in results["rows"]:
        lines.append("| " + " | ".join([name, *(fmt(v, digits) for v in values)]) + " |")
    return "\n".join(lines)


def markdown(results: Mapping[str, Any]) -> str:
    gen, judge = results["generation"], results["judge"]
    calls = ", ".join(f"{role} {count}" for role, count in gen["calls"].items()) or "none"
    lines = [
        f"# {results['benchmark']}: {results['system']}",
        "",
        *(f"- {key}: {value}" for key, value in results["components"].items()),
        f"- samples: {results['samples']}, with an output: {results['outputs']}",
        "",
        f"**{results['metric']}: {fmt(results['overall'], results['digits'])}**",
        "",
        table(results),
        "",
        *(f"- {note}" for note in results["notes"]),
        "",
        "## Calls",
        "",
        f"- generation (every sample's latest try): {calls}",
        f"- judge: {judge['calls']} calls; this run asked {judge['asked_this_run']} "
        f"({judge['requests_this_run']} requests with re-asks), {judge['from_cache']} from the "
        "cache",
        "",
        "## Failures",
        "",
        f"- generation: {len(gen['failed'])} sample(s) without an output"
        + "".join(f"\n  - {key}: {error}" for key, error in sorted(gen["failed"].items())),
        f"- judge: {len(judge['unreadable'])} answer(s) unreadable after re-asks (counted as the "
        f"official script counts them), {len(judge['failed'])} call(s) failed (asked again by "
        "the next run)"
        + "".join(f"\n  - {key}: {error}" for key, error in sorted(judge["failed"].items())),
        "",
    ]
    return "\n".join(lines)


def read_results(run: Path) -> dict[str, Any]:
    path = Path(run) / RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a finished `itk eval` run folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def compare(runs: Sequence[Path]) -> str:
    """One Markdown table of runs of the same benchmark: a column per run (its system), a row
    per group (the first column of each run's table), then samples with outputs and failures."""
    if not runs:
        raise ValueError("give at least one run folder to compare")
    loaded = [read_results(run) for run in runs]
    benchmarks = {r["benchmark"] for r in loaded}
    if len(benchmarks) > 1:
        raise ValueError(f"runs of different benchmarks cannot share a table: {sorted(benchmarks)}")
    names = [f"{r['system']} ({Path(run).name})" for r, run in zip(loaded, runs, strict=True)]
    groups: list[str] = []
    for results in loaded:
        groups += [name for name, _ in results["rows"] if name not in groups]
    first = loaded[0]
    lines = [
        f"# {first['benchmark']}: {first['metric']} ({first['columns'][0]})",
        "",
        "| group | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for group in groups:
        cells = []
        for results in loaded:
            values = dict((name, v) for name, v in results["rows"]).get(group)
            cells.append(fmt(values[0], results["digits"]) if values else "—")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    extra = (
        ("samples with an output", lambda r: f"{r['outputs']}/{r['samples']}"),
        ("generation failures", lambda r: str(len(r["generation"]["failed"]))),
        ("judge answers unreadable", lambda r: str(len(r["judge"]["unreadable"]))),
        ("judge calls failed", lambda r: str(len(r["judge"]["failed"]))),
    )
    for label, cell in extra:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in loaded) + " |")
    return "\n".join(lines) + "\n"

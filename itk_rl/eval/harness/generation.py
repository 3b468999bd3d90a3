"""Generation: each sample without an output goes through the system under test, and its
output is written in the benchmark's official layout as soon as it is done.

Resumable per sample: a sample whose output exists is skipped, and every output file is
written atomically, so an interrupted run loses at most the samples in flight. A sample the
system fails on (no usable plan, a step without an image) gets no output — the benchmark counts
it as its official script counts a missing one — and is tried again by the next run. What each
sample cost and why one failed goes to `generation.jsonl`.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from itk_rl.eval.harness.core import Benchmark, Sample, SystemOutput
from itk_rl.formats import Trajectory
from itk_rl.pipeline.loop import InterleavePipeline, PipelineError

GENERATION_LOG = "generation.jsonl"


def system_output(trajectory: Trajectory, has_planner: bool) -> SystemOutput:
    """Each step's final image and text (`auxiliary_text`, else `instruction`, as
    InterleaveThinker's runner writes them); without a planner there is no text."""
    texts, images = [], []
    for record in trajectory.steps:
        final = record.final
        if final is None or final.image is None:
            break
        texts.append(record.step.display_text if has_planner else "")
        images.append(final.image)
    return SystemOutput(tuple(texts), tuple(images))


def call_counts(trajectory: Trajectory | None, has_planner: bool) -> dict[str, int]:
    """Requests the pipeline made for one sample (a transport retry inside a call is not
    counted): one plan, one render per attempt, one review per reviewed attempt."""
    counts = {"planner": int(has_planner), "generator": 0, "critic": 0}
    for record in trajectory.steps if trajectory is not None else ():
        for attempt in record.attempts:
            counts["generator"] += 1
            reviewed = attempt.critic is not None
            counts["critic"] += reviewed or (attempt.error or "").startswith("critic failed")
    return counts


def read_log(run: Path) -> dict[str, dict[str, Any]]:
    """The latest `generation.jsonl` record of each sample (a line cut by a crash is skipped)."""
    path = Path(run) / GENERATION_LOG
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "sample" in record:
                records[str(record["sample"])] = record
    return records


@dataclass
class GenerationReport:
    """What this run generated: samples done, skipped (output present) and failed (why)."""

    done: list[str] = field(default_factory=list)
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    calls: Counter = field(default_factory=Counter)


def pending(bench: Benchmark, run: Path, samples: Sequence[Sample]) -> list[Sample]:
    return [sample for sample in samples if not bench.has_output(run, sample)]


def generate(
    bench: Benchmark,
    run: Path,
    samples: Sequence[Sample],
    pipeline: InterleavePipeline,
    workers: int,
    log: Callable[[str], None],
) -> GenerationReport:
    """Run `pipeline` on every sample without an output, `workers` samples at a time (more
    than one only when every component is thread-safe, e.g. behind an API)."""
    todo = pending(bench, run, samples)
    report = GenerationReport(skipped=len(samples) - len(todo))
    if not todo:
        return report
    has_planner = pipeline.planner is not None
    with ThreadPoolExecutor(max(1, workers), "eval-generate") as pool:
        futures = {pool.submit(_run_one, pipeline, sample, has_planner): sample for sample in todo}
        bar = tqdm(as_completed(futures), total=len(todo), desc="generate", file=sys.stderr)
        for future in bar:
            sample = futures[future]
            output, record = future.result()
            # Outputs are written here, on one thread, as each sample finishes.
            if output is not None:
                bench.write_output(run, sample, output)
                report.done.append(sample.key)
            else:
                report.failed[sample.key] = record["error"]
                log(f"{sample.key}: no output ({record['error']}); a rerun tries it again")
            report.calls.update(record["calls"])
            _append(Path(run) / GENERATION_LOG, record)
    return report


def _run_one(
    pipeline: InterleavePipeline, sample: Sample, has_planner: bool
) -> tuple[SystemOutput | None, dict[str, Any]]:
    start = time.perf_counter()
    trajectory: Trajectory | None = None
    error = None
    try:
        trajectory = pipeline.run(sample.request())
    except PipelineError as exc:
        trajectory, error = exc.trajectory, str(exc)
    except (ValueError, FileNotFoundError) as exc:  # an unreadable input image
        error = f"{type(exc).__name__}: {exc}"
    output = system_output(trajectory, has_planner) if error is None else None
    if output is not None and not output.images:
        output, error = None, "the system produced no image"
    record = {
        "sample": sample.key,
        "ok": output is not None,
        "error": error,
        "texts": list(output.texts) if output is not None else [],
        "attempts": [len(r.attempts) for r in trajectory.steps] if trajectory else [],
        "calls": call_counts(trajectory, has_planner),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return output, record


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")

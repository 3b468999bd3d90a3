"""The data build: `python -m itk_rl.build_data --config-name data_testbed [overrides]`.

Phases, each a function below: prompts (bank → prompts, pinned in OUT) → teacher trajectories
and judge scores (Ray actors; resumable) → filters and splits → datasets → report.

    OUT/bank.json, OUT/prompts.jsonl        the bank (after any teacher expansion) and the
                                            prompts; a rerun into OUT must derive the same ones
    OUT/trajectories/<id>/…                 one folder per prompt (itk_rl.data.teacher)
    OUT/critic_sft/{train,eval}.parquet     CriticSample fields + `target` (the answer text)
    OUT/critic_rl/{train,eval}.parquet      exactly CriticSample rows (itk_rl.data.critic_records)
    OUT/planner_sft/{train,eval}.parquet    truncation pairs (itk_rl.data.planner_records)
    OUT/build.json                          settings, counts, status, time
    OUT/report/                             counts, score histograms, examples (itk_rl.data.report)

A rerun into the same OUT skips every prompt already done (finished or failed), so an
interrupted build resumes; the datasets are rebuilt from all finished trajectories, so a
resumed build writes the same rows as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from itk_rl.data.critic_records import save_critic_records, save_critic_sft_records
from itk_rl.data.filters import FilterConfig
from itk_rl.data.planner_records import save_planner_pairs
from itk_rl.data.prompts import Prompt, PromptBank, PromptSampler, expand_bank, load_bank
from itk_rl.data.report import write_report
from itk_rl.data.splits import EVAL, TRAIN, Side, SplitConfig, build_side, side_of
from itk_rl.data.teacher import (
    TRAJECTORY,
    TeacherPool,
    TeacherReport,
    TrajectoryStore,
    run_teachers,
)
from itk_rl.formats import Trajectory
from itk_rl.formats.files import write_atomic
from itk_rl.job import check_resources, plain
from itk_rl.metrics import ProgressReport

BANK, PROMPTS, BUILD = "bank.json", "prompts.jsonl", "build.json"
DATASETS = ("critic_sft", "critic_rl", "planner_sft")


def prepare_prompts(cfg: DictConfig, out: Path, log: Callable[[str], None]) -> list[Prompt]:
    """The build's prompts; the bank (expanded by a teacher if configured) is pinned in OUT so
    a rerun neither asks the teacher again nor drifts. ValueError if OUT disagrees."""
    from hydra.utils import instantiate

    source = load_bank(cfg.prompts.bank)
    pinned = out / BANK
    if pinned.is_file():
        data = json.loads(pinned.read_text(encoding="utf-8"))
        if data["source"] != source.to_dict():
            raise ValueError(
                f"{pinned} was built from another bank than prompts.bank={cfg.prompts.bank!r}; "
                "use a new output_dir"
            )
        bank = PromptBank.from_dict(data["bank"], str(pinned))
    else:
        bank = source
        expand = cfg.prompts.expand
        if expand is not None:
            engine = instantiate(expand.engine)
            bank, report = expand_bank(
                source, engine, expand.per_sub_category, instantiate(expand.sampling)
            )
            log(
                f"[build] bank expanded: {report.kept} template(s) kept, {report.rejected} rejected"
            )
        data = {"source": source.to_dict(), "bank": bank.to_dict()}
        write_atomic(pinned, json.dumps(data, ensure_ascii=False, indent=1))
    sampler = PromptSampler(bank, cfg.prompts.seed, cfg.prompts.synonym_rate)
    prompts = sampler.sample(cfg.prompts.count)
    listed = out / PROMPTS
    known: list[dict[str, Any]] = []
    if listed.is_file():
        known = [json.loads(line) for line in listed.read_text(encoding="utf-8").splitlines()]
        for old, new in zip(known, prompts, strict=False):
            if old != new.to_dict():
                raise ValueError(
                    f"{listed}: prompt {old['id']} differs from what prompts.* now gives "
                    f"({old['text']!r} vs {new.text!r}); use a new output_dir"
                )
    if len(prompts) > len(known):
        lines = "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in prompts)
        write_atomic(listed, lines)
    return prompts


def run_teacher_phase(
    cfg: DictConfig, prompts: list[Prompt], store: TrajectoryStore, log: Callable[[str], None]
) -> TeacherReport:
    """Start the teacher and judge actors (only if some prompt is left, and once the cluster
    is known to hold them all) and run them."""
    import ray

    from itk_rl.rewards.judge_pool import JudgePool

    todo = sum(not store.is_done(p.id, cfg.retry_failed) for p in prompts)
    if todo == 0:
        return TeacherReport(skipped=len(prompts))
    if cfg.max_new_trajectories is not None:
        todo = min(todo, cfg.max_new_trajectories)
    progress = ProgressReport(todo, "[build] teacher trajectories")
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, logging_level="WARNING")
    # Actor groups: `component` (what each actor builds) beside the pool's settings.
    teacher_group, judge_group = plain(cfg.teachers), plain(cfg.judge)
    try:
        check_resources({name: (cfg[name].num_actors, cfg[name]) for name in ("teachers", "judge")})
        with (
            TeacherPool(teacher_group.pop("component"), **teacher_group) as teachers,
            JudgePool(judge_group.pop("component"), **judge_group) as judges,
        ):
            return run_teachers(
                prompts,
                store,
                teachers,
                judges,
                cfg.max_new_trajectories,
                cfg.retry_failed,
                log,
                progress.advance,
            )
    finally:
        progress.close()
        if started:
            ray.shutdown()


def collect(
    prompts: list[Prompt], store: TrajectoryStore
) -> tuple[list[tuple[str, Trajectory]], Counter[str], int]:
    """Finished trajectories (by id), failures by kind, and how many prompts are not done."""
    finished, failures, pending = [], Counter(), 0
    for prompt in prompts:
        if (store.folder(prompt.id) / TRAJECTORY).is_file():
            finished.append((prompt.id, store.load(prompt.id)))
        elif (failure := store.failure(prompt.id)) is not None:
            failures[failure["kind"]] += 1
        else:
            pending += 1
    return finished, failures, pending


def teacher_counts(
    prompts: list[Prompt],
    finished: list[tuple[str, Trajectory]],
    failures: Counter[str],
    pending: int,
) -> dict[str, Any]:
    """Prompts finished/failed/pending, and the teacher's output quality inside trajectories."""
    attempts = [a for _, t in finished for r in t.steps for a in r.attempts]
    critics = [a.critic for a in attempts if a.critic is not None]
    return {
        "prompts": len(prompts),
        "finished": len(finished),
        "failed": sum(failures.values()),
        "pending": pending,
        "failures_by_kind": dict(sorted(failures.items())),
        "steps": sum(len(t.steps) for _, t in finished),
        "attempts": len(attempts),
        "planner_outputs_repaired": sum(not t.planner.format_valid for _, t in finished),
        "critic_outputs_repaired": sum(c.value is not None and not c.format_valid for c in critics),
        "critic_outputs_unreadable": sum(c.value is None for c in critics),
        "critic_calls_failed": sum(a.error is not None and a.image is not None for a in attempts),
        "renders_failed": sum(a.image is None for a in attempts),
    }


def write_datasets(out: Path, sides: dict[str, Side]) -> dict[str, str]:
    """Every dataset and side as parquet (empty files too, so the layout never changes)."""
    paths = {}
    for name, side in sides.items():
        sft = side.critic_sft
        written = [
            save_critic_sft_records(
                [c.sample for c in sft],
                [c.target or "" for c in sft],
                out / "critic_sft" / f"{name}.parquet",
            ),
            save_critic_records(
                [c.sample for c in side.critic_rl], out / "critic_rl" / f"{name}.parquet"
            ),
            save_planner_pairs(side.planner_sft, out / "planner_sft" / f"{name}.parquet"),
        ]
        for dataset, path in zip(DATASETS, written, strict=True):
            paths[f"{dataset}/{name}"] = str(path.relative_to(out))
    return paths


def run(cfg: DictConfig, recipe: str = "data_testbed", log: Callable[[str], None] = print) -> dict:
    """The whole build; returns what `build.json` records."""
    import datasets
    from hydra.utils import instantiate

    datasets.disable_progress_bars()
    start = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    filters = FilterConfig(**plain(cfg.filters))
    splits = SplitConfig(**plain(cfg.splits))
    think = instantiate(cfg.think)
    prompts = prepare_prompts(cfg, out, log)
    store = TrajectoryStore(out / "trajectories")
    log(f"[build] {len(prompts)} prompt(s); teachers running")
    this_run = run_teacher_phase(cfg, prompts, store, log)
    finished, failures, pending = collect(prompts, store)
    by_side: dict[str, list[tuple[str, Trajectory]]] = {TRAIN: [], EVAL: []}
    for item in finished:
        by_side[side_of(item[0], splits.eval_fraction, splits.seed)].append(item)
    sides = {
        name: build_side(name, items, filters, splits, think) for name, items in by_side.items()
    }
    paths = write_datasets(out, sides)
    status = "complete" if not pending else f"partial: {pending} prompt(s) not run yet"
    summary = {
        "recipe": recipe,
        "status": status,
        "build_s": time.perf_counter() - start,
        "this_run": {
            "new": len(this_run.finished),
            "failed": len(this_run.failed),
            "skipped_as_done": this_run.skipped,
        },
        "counts": {
            "teacher": teacher_counts(prompts, finished, failures, pending),
            "splits": {name: side.counts for name, side in sides.items()},
        },
        "datasets": paths,
        "config": plain(cfg),
    }
    report = write_report(out, summary, sides, filters, cfg.report_examples)
    summary["report"] = str(report.relative_to(out))
    write_atomic(out / BUILD, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    rows = {key: side.counts[key]["rows"] for key in DATASETS for side in [sides[TRAIN]]}
    log(f"[build] {status} in {summary['build_s']:.1f} s; train rows {rows}; report {report}")
    return summary


@hydra.main(config_path="pkg://itk_rl.recipes", config_name="data_testbed", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run(cfg, recipe=HydraConfig.get().job.config_name)


if __name__ == "__main__":
    main()

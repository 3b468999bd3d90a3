"""Held-out testbed tasks: distinct requests under a seed of their own, checked against the
training set so that an evaluation never scores a request the critic trained on."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from itk_rl.testbed import TaskSampler, TestbedTask

HELDOUT_SEED = 7919
"""TaskSampler seed of held-out tasks; training recipes and the demo use seeds 0 and 1."""


def heldout_tasks(
    n: int,
    seed: int = HELDOUT_SEED,
    synonym_rate: float = 0.5,
    exclude: Collection[str] = (),
    min_steps: int = 2,
    max_steps: int = 4,
) -> list[TestbedTask]:
    """`n` tasks with distinct requests, none in `exclude` (training requests).

    The seed alone does not make tasks unseen: the testbed grammar is small, so a request can
    recur under another seed or in a prompt bank; those are skipped, deterministically.
    """
    sampler = TaskSampler(seed, synonym_rate, min_steps=min_steps, max_steps=max_steps)
    excluded, seen, tasks = set(exclude), set(), []
    for index in range(100 * n + 100):
        if len(tasks) >= n:
            break
        task = sampler.task(index)
        if task.request not in excluded and task.request not in seen:
            seen.add(task.request)
            tasks.append(task)
    if len(tasks) == n:
        return tasks
    raise ValueError(f"found only {len(tasks)} distinct held-out requests of {n} (seed {seed})")


def training_texts(source: str | Path | Iterable[str]) -> set[str]:
    """The prompt texts of a training set: a parquet file (columns request, origin_prompt,
    rewritten_prompt, text — whichever exist), a JSON-lines file (fields text or request,
    e.g. a data build's prompts.jsonl), or the texts themselves."""
    if not isinstance(source, (str, Path)):
        return set(source)
    path = Path(source)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = set(pq.read_schema(path).names) & {
            "request",
            "origin_prompt",
            "rewritten_prompt",
            "text",
        }
        if not names:
            raise ValueError(f"{path}: no prompt column (request, origin_prompt, text)")
        table = pq.read_table(path, columns=sorted(names))
        return {str(v) for name in names for v in table.column(name).to_pylist()}
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {str(row.get("text", row.get("request"))) for row in rows}
    raise ValueError(f"{path}: expected a .parquet or .jsonl training set")


def check_heldout(tasks: Sequence[TestbedTask], training: str | Path | Iterable[str]) -> float:
    """Raise ValueError if any held-out request appears in `training`; else return the share of
    held-out *step* prompts seen there (informative only: the critic trains on single steps of
    a small grammar, where step prompts recur with different scenes)."""
    texts = training_texts(training)
    overlap = [task.request for task in tasks if task.request in texts]
    if overlap:
        where = training if isinstance(training, (str, Path)) else "the given training set"
        raise ValueError(
            f"{len(overlap)} of {len(tasks)} held-out requests appear in {where}, "
            f"e.g. {overlap[0]!r}"
        )
    prompts = [step.prompt for task in tasks for step in task.plan.steps]
    return sum(p in texts for p in prompts) / max(len(prompts), 1)

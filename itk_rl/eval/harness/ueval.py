"""UEval in the harness: each question answered with text and images, the official output JSON
(`outputs.json`, images under `images/`), one judge call per rubric item, scored by
`itk_rl.eval.benchmarks.ueval`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from itk_rl.eval.benchmarks import ueval
from itk_rl.eval.benchmarks.fetch import ensure, hub_split_as_jsonl, recorded_sha
from itk_rl.eval.harness.core import (
    Answer,
    Answers,
    JudgeCall,
    Sample,
    Scores,
    SystemOutput,
    View,
    save_png,
)

OUTPUTS = "outputs.json"
IMAGES = "images"
_KEPT = ("id", "prompt", "text_ref", "task_type", "question_type", "text_rubrics", "image_rubrics")


def _export(row: Mapping[str, Any]) -> dict[str, Any]:
    """A hub row without its reference images (the judge never sees them)."""
    return {key: row[key] for key in _KEPT if key in row}


class UEvalBench:
    """UEval's test split.

    Args:
        data_dir: the folder holding `data_file`.
        data_file: a JSON or JSON-lines export of the test split, relative to `data_dir`.
        fetch: when the file is missing, export it from hub dataset `repo` at `revision` with
            `datasets`, at the commit pinned in `data_dir` at the first fetch (False: fail
            naming it).
        limit: only the first `limit` items (None: all).
    """

    name = "ueval"

    def __init__(
        self,
        data_dir: str = "~/.cache/itk_rl/benchmarks/ueval",
        data_file: str = "ueval_test.jsonl",
        fetch: bool = True,
        repo: str = "zlab-princeton/UEval",
        revision: str | None = None,
        split: str = "test",
        limit: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.data_file, self.fetch, self.repo = data_file, fetch, repo
        self.revision, self.split, self.limit = revision, split, limit
        self._outputs: dict[Path, dict[str, ueval.UEvalOutput]] = {}

    def samples(self) -> list[Sample]:
        path = self.data_dir / self.data_file
        revision = self.revision if self.fetch else None
        fetch = hub_split_as_jsonl(
            self.data_dir, self.data_file, self.repo, revision, self.split, _export
        )
        source = f"hub dataset {self.repo} (split {self.split}), exported as JSON lines"
        ensure(path, f"the UEval {self.split} split", source, fetch)
        items = ueval.load_items(path)[: self.limit]
        return [Sample(item.id, item.prompt, item.task, item) for item in items]

    def provenance(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "data_file": self.data_file,
            "repo": self.repo,
            "revision": self.revision,
            "sha": recorded_sha(self.data_dir),
        }

    def _read(self, run: Path) -> dict[str, ueval.UEvalOutput]:
        run = Path(run)
        if run not in self._outputs:
            path = run / OUTPUTS
            self._outputs[run] = ueval.read_outputs(path) if path.is_file() else {}
        return self._outputs[run]

    def has_output(self, run: Path, sample: Sample) -> bool:
        return sample.key in self._read(run)

    def write_output(self, run: Path, sample: Sample, output: SystemOutput) -> None:
        """The steps' images under `images/` and the row in `outputs.json`, rewritten whole
        (image paths relative to the run folder: run the official script from there)."""
        stem = re.sub(r"[^\w.-]", "_", sample.key)
        paths = []
        for number, image in enumerate(output.images, start=1):
            relative = f"{IMAGES}/{stem}_{number}.png"
            save_png(Path(run) / relative, image)
            paths.append(relative)
        outputs = self._read(run)
        outputs[sample.key] = ueval.UEvalOutput(sample.key, output.text, tuple(paths))
        ueval.write_outputs(Path(run) / OUTPUTS, outputs.values())

    def _output(self, run: Path, sample: Sample) -> tuple[str, tuple[Path, ...]]:
        output = ueval.output_for(sample.record, self._read(run))
        images = tuple(
            path if path.is_absolute() else Path(run) / path
            for path in map(Path, output.image_answer)
        )
        return output.text_answer, images

    def view(self, run: Path, sample: Sample) -> View | None:
        if not self.has_output(run, sample):
            return None
        return View(*self._output(run, sample))

    def count_judge_calls(self, sample: Sample) -> int:
        return len(sample.record.text_rubrics) + len(sample.record.image_rubrics)

    def judge_calls(
        self, run: Path, sample: Sample, answers: Mapping[str, Answer]
    ) -> list[JudgeCall]:
        """Every rubric item; an item missing from the output is judged as empty text with no
        images, as the official script judges it."""
        item: ueval.UEvalItem = sample.record
        text, images = self._output(run, sample)
        parse = ueval.parse_criteria_answer
        calls = [
            JudgeCall(
                sample.key,
                f"text/{i}",
                "ueval_text",
                {"question": item.prompt, "text_answer": text, "criterion": criterion},
                (),
                parse,
            )
            for i, criterion in enumerate(item.text_rubrics)
        ]
        for j, criterion in enumerate(item.image_rubrics):
            values = {"question": item.prompt, "criterion": criterion}
            if item.is_open:
                values["text_answer"] = text
            role = "ueval_image_open" if item.is_open else "ueval_image_closed"
            calls.append(JudgeCall(sample.key, f"image/{j}", role, values, images, parse))
        return calls

    def score(self, run: Path, samples: Sequence[Sample], answers: Answers) -> Scores:
        item_scores, shown = [], {}
        for sample in samples:
            got = answers.get(sample.key, {})
            item: ueval.UEvalItem = sample.record

            def verdicts(kind: str, count: int, got: Mapping[str, Answer] = got) -> list:
                return [
                    got[f"{kind}/{i}"].value if f"{kind}/{i}" in got else None for i in range(count)
                ]

            scored = ueval.score_item(
                item,
                verdicts("text", len(item.text_rubrics)),
                verdicts("image", len(item.image_rubrics)),
            )
            item_scores.append(scored)
            shown[sample.key] = (
                f"text {scored.text_met}/{scored.text_total} met, "
                f"image {scored.image_met}/{scored.image_total} met"
            )
        result = ueval.score_ueval(item_scores)

        def pct(value: float | None) -> float | None:
            return None if value is None else 100 * value

        overall = result.overall
        rows = [
            ("Avg (8 tasks)", (pct(result.avg), None, None, overall.n_items)),
            ("all items", (None, pct(overall.text), pct(overall.image), overall.n_items)),
        ]
        rows += [
            (task, (pct(g.score), pct(g.text), pct(g.image), g.n_items))
            for task, g in result.tasks.items()
        ]
        notes = [
            "A task's column is our choice (the official script prints only the text and image "
            "averages): the mean of the task's text and image rates.",
        ]
        if result.avg is None:
            notes.append("No Avg: a task has no scored item.")
        return Scores(
            metric="Avg (%)",
            overall=pct(result.avg),
            columns=("score %", "text %", "image %", "items"),
            rows=tuple(rows),
            official=result.to_dict(),
            per_sample=shown,
            notes=tuple(notes),
            digits=1,
        )

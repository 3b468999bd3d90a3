"""CoMM tasks 3 and 4 in the harness: a document continued (task 3, from its first half) or
written from its title (task 4), per-sample folders in the official layout under `results/`,
three judge calls per sample, scored by `itk_rl.eval.benchmarks.comm`.

Judge content follows the official evaluation: images numbered across the input and the
output (`<Img_i>` … `</Img_i>`); the descriptions call sees the same text with the images
removed; the fidelity call pairs each output image with the description of its number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itk_rl.eval.benchmarks import comm
from itk_rl.eval.benchmarks.fetch import download, ensure, hub_files, recorded_sha
from itk_rl.eval.harness.core import (
    Answer,
    Answers,
    JudgeCall,
    Part,
    Sample,
    Scores,
    SystemOutput,
    View,
    save_png,
)
from itk_rl.formats.images import read_image_file

RESULTS = "results"
MARK = "<IMAGE>"


@dataclass(frozen=True)
class CommSample:
    """A record under one task: the steps given to the system (task 3: the first half)."""

    record: comm.CommRecord
    task: int
    given: tuple[tuple[comm.CommEntry, ...], ...]
    model_input: str
    """The request text, one `<IMAGE>` per given image that exists locally."""


class CommBench:
    """CoMM's test split, tasks 3 and 4.

    Args:
        data_dir: the folder holding `data_file` (the official `test_data.pth`, or its records
            as JSON).
        images_dir: where the official download script put the images (`image_path` of each
            entry is relative to it); task 3 gives the system the first half's images.
        fetch: fetch a missing `data_file` from hub dataset `repo` at `revision` (at the commit
            pinned in `data_dir` at the first fetch), and missing task-3 images from their URLs
            (an image that cannot be fetched is left out).
        tasks: which tasks to run (3, 4).
        limit: only the first `limit` records (None: all).
    """

    name = "comm"

    def __init__(
        self,
        data_dir: str = "~/.cache/itk_rl/benchmarks/comm",
        data_file: str = "test_data.pth",
        images_dir: str = "~/.cache/itk_rl/benchmarks/comm/images",
        fetch: bool = True,
        repo: str = "weisuxi/CoMM",
        revision: str | None = None,
        tasks: Sequence[int] = (3, 4),
        limit: int | None = None,
    ) -> None:
        for task in tasks:
            if task not in comm.TASKS:
                raise ValueError(f"benchmark.tasks: {task} is not one of {comm.TASKS}")
        self.data_dir = Path(data_dir).expanduser()
        self.images_dir = Path(images_dir).expanduser()
        self.data_file, self.fetch, self.repo, self.revision = data_file, fetch, repo, revision
        self.tasks, self.limit = tuple(tasks), limit
        self.missing_images = 0

    def samples(self) -> list[Sample]:
        path = self.data_dir / self.data_file
        revision = self.revision if self.fetch else None
        fetcher = hub_files(self.data_dir, self.repo, revision, [f"*{self.data_file}"])
        source = f"hub dataset {self.repo} (or the Google Drive link in its README)"
        ensure(path, f"the CoMM test data ({self.data_file})", source, fetcher)
        records = comm.load_records(path)[: self.limit]
        return [self._sample(record, task) for task in self.tasks for record in records]

    def _sample(self, record: comm.CommRecord, task: int) -> Sample:
        given = record.steps[: len(record.steps) // 2] if task == 3 else ()
        images: list[Path] = []
        lines = []
        for number, step in enumerate(given, start=1):
            text = " ".join(e.content for e in step if e.type == "text" and e.content)
            for entry in step:
                if entry.type == "image" and (image := self._input_image(entry)) is not None:
                    images.append(image)
                    text += f" {MARK}"
            lines.append(f"({number}) {text.strip()}")
        if task == 3:
            prompt = (
                f"Here are the first steps of an illustrated how-to guide, {record.title}:\n"
                + "\n".join(lines)
                + "\nWrite the remaining steps, each with a short text and an image."
            )
        else:
            prompt = (
                f"Write an illustrated step-by-step guide, {record.title}: each step a short "
                "text and an image."
            )
        key = comm.sample_dir(Path("."), record.data_id, task).name
        sample = CommSample(record, task, given, prompt)
        return Sample(key, prompt, f"task{task}", sample, tuple(images))

    def _input_image(self, entry: comm.CommEntry) -> Path | None:
        """A given image on disk (fetched from its URL when allowed); None, counted, when it
        cannot be had (third-party URLs die)."""
        if not entry.image_path:
            return None
        path = self.images_dir / entry.image_path
        if not path.is_file() and self.fetch and entry.url:
            try:
                download(entry.url, path)
                read_image_file(path, "CoMM image")
            except Exception:  # a dead third-party URL leaves the image out, as officially
                path.unlink(missing_ok=True)
        if not path.is_file():
            self.missing_images += 1
            return None
        return path

    def provenance(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "data_file": self.data_file,
            "images_dir": str(self.images_dir),
            "repo": self.repo,
            "revision": self.revision,
            "sha": recorded_sha(self.data_dir),
            "tasks": list(self.tasks),
            "missing_input_images": self.missing_images,
        }

    def _folder(self, run: Path, sample: Sample) -> Path:
        return Path(run) / RESULTS / sample.key

    def has_output(self, run: Path, sample: Sample) -> bool:
        return (self._folder(run, sample) / "results.json").is_file()

    def write_output(self, run: Path, sample: Sample, output: SystemOutput) -> None:
        """Images first, then `results.json` (whose presence marks the sample done)."""
        folder = self._folder(run, sample)
        inputs = []
        for k, path in enumerate(sample.input_images, start=1):
            inputs.append(f"input_{k}.png")
            save_png(folder / inputs[-1], read_image_file(path, "CoMM input image"))
        start = len(sample.record.given) + 1
        predictions, parts = [], []
        for number, (text, image) in enumerate(
            zip(output.texts, output.images, strict=True), start=start
        ):
            predictions.append(f"predict_{number}.png")
            save_png(folder / predictions[-1], image)
            parts.append(f"({number}) {text} {MARK}".replace("  ", " "))
        result = comm.CommOutput(sample.prompt, " ".join(parts), tuple(inputs), tuple(predictions))
        comm.write_output(folder, result)

    def view(self, run: Path, sample: Sample) -> View | None:
        if not self.has_output(run, sample):
            return None
        folder = self._folder(run, sample)
        output = comm.read_output(folder)
        return View(output.model_output, tuple(folder / p for p in output.prediction_image_list))

    def count_judge_calls(self, sample: Sample) -> int:
        return 3

    def judge_calls(
        self, run: Path, sample: Sample, answers: Mapping[str, Answer]
    ) -> list[JudgeCall]:
        if not self.has_output(run, sample):
            return []  # no result: left out, as officially
        folder = self._folder(run, sample)
        output = comm.read_output(folder)
        inputs = [folder / p for p in output.input_image_list]
        outputs = [folder / p for p in output.prediction_image_list]
        title = {"title": sample.record.record.title}
        given, start = _interleave(output.model_input, inputs, 0)
        written, _ = _interleave(output.model_output, outputs, start)
        document = ("INPUT:", *given, "OUTPUT:", *written)
        text_only = tuple(p for p in document if isinstance(p, str))
        calls = [
            JudgeCall(
                sample.key, "coherence", "comm_coherence", title, document,
                comm.parse_coherence_answer,
            ),
            JudgeCall(
                sample.key, "descriptions", "comm_descriptions", title, text_only,
                comm.parse_descriptions_answer,
            ),
        ]  # fmt: skip
        described = answers.get("descriptions")
        if described is not None and described.value is not None:
            descriptions = described.value[len(inputs) :]
            pairs: list[Part] = []
            for i, image in enumerate(outputs):
                text = descriptions[i] if i < len(descriptions) else ""
                pairs += [f"<Description_{i}> {text} </Description_{i}>", f"<Img_{i}>", image]
                pairs.append(f"</Img_{i}>")
            calls.append(
                JudgeCall(
                    sample.key, "fidelity", "comm_fidelity", {}, tuple(pairs),
                    comm.parse_fidelity_answer,
                )
            )  # fmt: skip
        return calls

    def score(self, run: Path, samples: Sequence[Sample], answers: Answers) -> Scores:
        """The seven means per task; each scored sample's `evaluation_results.json` is written
        in the official layout, so the official averaging script reads the same numbers."""
        rows: list[tuple[str, tuple[Any, ...]]] = []
        official: dict[str, Any] = {}
        shown: dict[str, str] = {}
        for task in self.tasks:
            scored = []
            for sample in (s for s in samples if s.record.task == task):
                got = answers.get(sample.key, {})
                values = [got[k].value if k in got else None for k in ("coherence", "fidelity")]
                scores = comm.sample_scores(*values)
                scored.append(scores)
                if scores is None:
                    shown[sample.key] = "left out (no output or no readable result)"
                    continue
                comm.write_evaluation(self._folder(run, sample), scores)
                shown[sample.key] = ", ".join(
                    f"{m} {_shown(getattr(scores, m))}" for m in comm.METRICS
                )
            result = comm.score_comm(scored)
            official[f"task{task}"] = result.to_dict()
            rows += [(f"task {task} {m}", (v, result.n_samples)) for m, v in result.metrics.items()]
        return Scores(
            metric="CoMM (seven metrics, 0–10)",
            overall=None,
            columns=("score (0–10)", "scored samples"),
            rows=tuple(rows),
            official=official,
            per_sample=shown,
            notes=("Each metric is a plain mean over the scored samples, NA counted as 0.",),
            digits=2,
        )


def _shown(value: float | None) -> str:
    return "NA" if value is None else f"{value:g}"


def _interleave(text: str, images: Sequence[Path], start: int) -> tuple[list[Part], int]:
    """`text` with each `<IMAGE>` replaced by the next image, marked `<Img_i>` … `</Img_i>`
    (numbered from `start`); returns the parts and the next number. Images beyond the marks
    follow the text."""
    pieces = text.split(MARK)
    parts: list[Part] = []
    number = start
    remaining = list(images)
    for index, piece in enumerate(pieces):
        if piece.strip():
            parts.append(piece.strip())
        if index < len(pieces) - 1 and remaining:
            parts += [f"<Img_{number}>", remaining.pop(0), f"</Img_{number}>"]
            number += 1
    for image in remaining:
        parts += [f"<Img_{number}>", image, f"</Img_{number}>"]
        number += 1
    return parts, number

"""RISEBench in the harness: an edit of the input image per record, `images/{category}/
{index}.png`, one judge call per dimension, scored by `itk_rl.eval.benchmarks.rise`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from itk_rl.eval.benchmarks import rise
from itk_rl.eval.benchmarks.fetch import ensure, github_files, hub_files, recorded_sha
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


class RiseBench:
    """RISEBench-64 (GitHub) or RISEBench-360 (hub).

    Args:
        data_dir: the folder the data is in (or fetched into).
        data_file: the records file, relative to `data_dir`; record images are relative to its
            folder, as the official script reads them (`data/data_total.json` in a checkout).
        fetch: fetch what is missing (False: fail naming it).
        source: "github" (`repo` at commit `revision`: the file, then each record's images) or
            "hub" (hub dataset `repo` at `revision`: the whole dataset once, at the commit
            pinned in `data_dir` at the first fetch).
        limit: only the first `limit` records (None: all).
    """

    name = "rise"

    def __init__(
        self,
        data_dir: str = "~/.cache/itk_rl/benchmarks/rise",
        data_file: str = "data/data_total.json",
        fetch: bool = True,
        source: str = "github",
        repo: str = "PhoenixZ810/RISEBench",
        revision: str | None = None,
        limit: int | None = None,
    ) -> None:
        if source not in ("github", "hub"):
            raise ValueError(f"benchmark.source must be 'github' or 'hub', got {source!r}")
        self.data_dir = Path(data_dir).expanduser()
        self.data_file, self.fetch, self.source = data_file, fetch, source
        self.repo, self.revision, self.limit = repo, revision, limit
        self.input_dir = (self.data_dir / data_file).parent

    def samples(self) -> list[Sample]:
        what = f"the RISEBench data file {self.data_file}"
        revision = self.revision if self.fetch else None
        if self.source == "github":
            github_files(self.data_dir, self.repo, revision, [self.data_file], "the RISEBench file")
        else:
            fetcher = hub_files(self.data_dir, self.repo, revision, ["*"])
            ensure(self.data_dir / self.data_file, what, f"hub dataset {self.repo}", fetcher)
        records = rise.load_records(self.data_dir / self.data_file)[: self.limit]
        images = sorted({p for r in records for p in (r.image, r.reference_img) if p})
        prefix = str(Path(self.data_file).parent)
        names = [f"{prefix}/{p}" if prefix != "." else p for p in images]
        if self.source == "github":
            github_files(self.data_dir, self.repo, revision, names, "the RISEBench image")
        else:
            for name in names:
                ensure(
                    self.data_dir / name, "the RISEBench image", f"hub dataset {self.repo}", None
                )
        return [
            Sample(r.index, r.instruction, r.category, r, (self.input_dir / r.image,))
            for r in records
        ]

    def provenance(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "data_file": self.data_file,
            "source": self.source,
            "repo": self.repo,
            "revision": self.revision,
            "sha": recorded_sha(self.data_dir) if self.source == "hub" else None,
        }

    def has_output(self, run: Path, sample: Sample) -> bool:
        return rise.find_output_image(run, sample.record) is not None

    def write_output(self, run: Path, sample: Sample, output: SystemOutput) -> None:
        """The last step's final image: the edit's result."""
        save_png(rise.output_image(run, sample.record), output.images[-1])

    def view(self, run: Path, sample: Sample) -> View | None:
        image = rise.find_output_image(run, sample.record)
        return View("", (image,)) if image is not None else None

    def count_judge_calls(self, sample: Sample) -> int:
        return len(rise.judge_calls(sample.record))

    def judge_calls(
        self, run: Path, sample: Sample, answers: Mapping[str, Answer]
    ) -> list[JudgeCall]:
        record: rise.RiseRecord = sample.record
        output = rise.find_output_image(run, record)
        if output is None:
            return []  # no image: every dimension missing, not solved
        images = {"input": self.input_dir / record.image, "output": output}
        if record.reference_img:
            images["reference"] = self.input_dir / record.reference_img

        def parse(text: str) -> int | None:
            return rise.read_dimension(text, record)

        return [
            JudgeCall(
                sample.key,
                call.dimension,
                call.role,
                call.values,
                tuple(images[name] for name in call.images),
                parse,
            )
            for call in rise.judge_calls(record)
        ]

    def score(self, run: Path, samples: Sequence[Sample], answers: Answers) -> Scores:
        records = [s.record for s in samples]
        raw: dict[str, dict[str, int | None]] = {}
        shown: dict[str, str] = {}
        for sample in samples:
            got = answers.get(sample.key, {})
            if not got:
                shown[sample.key] = "no output: not solved"
                continue
            raw[sample.key] = {name: answer.value for name, answer in got.items()}
            scored = rise.score_sample(sample.record, raw[sample.key])
            dims = ", ".join(f"{k} {'?' if v is None else v}" for k, v in raw[sample.key].items())
            verdict = "solved" if scored.solved else "not solved"
            shown[sample.key] = f"{verdict} ({dims})"
        result = rise.score_rise(records, raw)

        def row(name: str, group: rise.RiseGroup) -> tuple[str, tuple[Any, ...]]:
            shown_group = group.to_dict()
            return name, (
                shown_group["accuracy_pct"],
                group.n,
                shown_group["score_pct"],
                group.consistency,
                group.reasoning,
                group.plausibility,
            )

        notes = ()
        if result.unscored:
            notes = (
                f"{len(result.unscored)} sample(s) without an image or a readable answer for "
                "every dimension count as not solved.",
            )
        return Scores(
            metric="Accuracy (%)",
            overall=result.overall.to_dict()["accuracy_pct"],
            columns=("accuracy %", "samples", "score %", "consistency", "reasoning", "plausib."),
            rows=(
                row("overall", result.overall),
                *(row(c, g) for c, g in result.categories.items()),
            ),
            official=result.to_dict(),
            per_sample=shown,
            notes=notes,
            digits=1,
        )

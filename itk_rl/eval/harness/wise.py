"""WISE in the harness: prompts from the official files, `images/{prompt_id}.png`, one judge
call per image, scored by `itk_rl.eval.benchmarks.wise` under the chosen protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from itk_rl.eval.benchmarks import wise
from itk_rl.eval.benchmarks.fetch import github_files
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

IMAGES = "images"


class WiseBench:
    """WISE under `protocol` (legacy or verified).

    Args:
        data_dir: a folder laid out as a WISE checkout (`WISE_legacy/data/*.json`,
            `data_verified/merge.json`); missing files are fetched into it when `fetch`.
        fetch: fetch missing files from `repo` at `commit` (False: fail naming them).
        repo: the official repository, `owner/name`.
        commit: the pinned commit the files are fetched at.
        limit: only the first `limit` prompts by id (None: all 1000; the overall needs all).
    """

    def __init__(
        self,
        protocol: str = "legacy",
        data_dir: str = "~/.cache/itk_rl/benchmarks/wise",
        fetch: bool = True,
        repo: str = "PKU-YuanGroup/WISE",
        commit: str | None = None,
        limit: int | None = None,
    ) -> None:
        self.protocol = wise.Protocol(protocol)
        self.name = "wise" if self.protocol is wise.Protocol.LEGACY else "wise_verified"
        self.data_dir = Path(data_dir).expanduser()
        self.fetch, self.repo, self.commit, self.limit = fetch, repo, commit, limit
        self.role = f"wise_{self.protocol.value}"

    def _files(self) -> list[Path]:
        found = wise.data_files(self.data_dir, self.protocol)
        if all(path.is_file() for path in found):
            return found
        wanted = (
            [wise.VERIFIED_MERGED]
            if self.protocol is wise.Protocol.VERIFIED
            else list(wise.DATA_FILES[wise.Protocol.LEGACY])
        )
        commit = self.commit if self.fetch else None
        what = f"the WISE {self.protocol.value} prompt file"
        return github_files(self.data_dir, self.repo, commit, wanted, what)

    def samples(self) -> list[Sample]:
        prompts = wise.load_prompts(self._files(), self.protocol)[: self.limit]
        return [Sample(str(p.prompt_id), p.prompt, p.category, p) for p in prompts]

    def provenance(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir), "repo": self.repo, "commit": self.commit}

    def _image(self, run: Path, sample: Sample) -> Path:
        return wise.image_path(Path(run) / IMAGES, sample.record.prompt_id)

    def has_output(self, run: Path, sample: Sample) -> bool:
        return self._image(run, sample).is_file()

    def write_output(self, run: Path, sample: Sample, output: SystemOutput) -> None:
        """The last step's final image (the system's answer to a text-to-image prompt)."""
        save_png(self._image(run, sample), output.images[-1])

    def view(self, run: Path, sample: Sample) -> View | None:
        image = self._image(run, sample)
        return View("", (image,)) if image.is_file() else None

    def count_judge_calls(self, sample: Sample) -> int:
        return 1

    def judge_calls(
        self, run: Path, sample: Sample, answers: Mapping[str, Answer]
    ) -> list[JudgeCall]:
        if not self.has_output(run, sample):
            return []  # the official scripts skip a missing image
        parse = (
            wise.parse_legacy_answer
            if self.protocol is wise.Protocol.LEGACY
            else wise.parse_verified_answer
        )
        values = {"prompt": sample.prompt, "explanation": sample.record.explanation}
        return [
            JudgeCall(sample.key, "score", self.role, values, (self._image(run, sample),), parse)
        ]

    def score(self, run: Path, samples: Sequence[Sample], answers: Answers) -> Scores:
        per_id: dict[int, float | None] = {}
        shown: dict[str, str] = {}
        for sample in samples:
            answer = answers.get(sample.key, {}).get("score")
            if answer is None or answer.value is None:
                shown[sample.key] = "left out (no image)" if answer is None else "left out"
                continue
            value = answer.value
            if isinstance(value, wise.LegacyScores):
                per_id[sample.record.prompt_id] = value.wiscore
                shown[sample.key] = (
                    f"WiScore {value.wiscore:.2f} (consistency {value.consistency}, realism "
                    f"{value.realism}, aesthetic {value.aesthetic_quality})"
                )
            else:
                per_id[sample.record.prompt_id] = float(value)
                shown[sample.key] = f"score {value}"
        result = wise.score_wise(per_id, self.protocol)
        rows = tuple(
            (name, (result.categories[name], result.counts[name])) for name in wise.CATEGORIES
        )
        notes = []
        if result.overall is None:
            notes.append(
                f"No overall: the official script gives one only when every prompt id 1–1000 "
                f"is scored; {len(result.missing_ids)} are not."
            )
        return Scores(
            metric=f"WiScore ({self.protocol.value})",
            overall=result.overall,
            columns=("WiScore", "scored samples"),
            rows=(("overall", (result.overall, len(per_id))), *rows),
            official=result.to_dict(),
            per_sample=shown,
            notes=tuple(notes),
            digits=2,
        )

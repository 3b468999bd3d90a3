"""Critic records (`CriticSample`) as a parquet file of a Hugging Face dataset.

Critic-RL files hold exactly the `CriticSample` fields; Critic-SFT files add `target`, the
critic's answer text to learn (`format_critic_answer`). Loading validates every row up front,
so a bad record stops a run before any actor starts and the error names the file, the row and
the field — not a shape mismatch twenty steps later. Files written before the `text_to_image`
column existed still load: each row's is then read from its before-image
(`legacy_text_to_image`), with a warning naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itk_rl.formats.images import RecordError
from itk_rl.formats.records import TEXT_TO_IMAGE, CriticSample, critic_sample_features

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)
TARGET = "target"


def write_parquet(
    rows: Sequence[dict[str, Any]], features: datasets.Features, path: str | Path
) -> Path:
    """Write `rows` as a parquet dataset file (to a temp name, then renamed: never half a file)."""
    import datasets

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        dataset = datasets.Dataset.from_list(list(rows), features=features)
    else:  # from_list cannot take the features of an empty list
        dataset = datasets.Dataset.from_dict({key: [] for key in features}, features=features)
    partial = path.with_name(path.name + ".partial")
    dataset.to_parquet(str(partial))
    partial.replace(path)
    return path


def read_parquet(
    path: str | Path, features: datasets.Features, what: str, optional: Collection[str] = ()
) -> datasets.Dataset:
    """A parquet dataset file with every column of `features` but the `optional` ones; errors
    name the file."""
    import datasets
    import pyarrow.parquet

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {str(path)!r}")
    try:
        # Through pyarrow rather than `Dataset.from_parquet`, which refuses a file of no rows;
        # the features (images included) come from the file's `huggingface` schema metadata.
        dataset = datasets.Dataset(pyarrow.parquet.read_table(str(path)))
    except Exception as error:  # arrow/datasets raise many types for a broken file
        raise RecordError(f"{path}: not a readable parquet dataset ({error})") from error
    missing = set(features) - set(dataset.column_names) - set(optional)
    if missing:
        raise RecordError(f"{path}: missing column(s) {sorted(missing)}")
    return dataset


def _read_critic_file(path: str | Path, features: datasets.Features, what: str) -> datasets.Dataset:
    """`read_parquet` for critic records, which may predate the `text_to_image` column."""
    dataset = read_parquet(path, features, what, optional=(TEXT_TO_IMAGE,))
    if TEXT_TO_IMAGE not in dataset.column_names:
        log.warning(
            "%s predates the %r column: each row's is read from its before-image (all white: "
            "text-to-image), which misreads an edit of a white image; rebuild the data to "
            "record it",
            path,
            TEXT_TO_IMAGE,
        )
    return dataset


def save_critic_records(samples: Sequence[CriticSample], path: str | Path) -> Path:
    """Write `samples` to the parquet file `path` (written to a temp name, then renamed)."""
    return write_parquet([s.to_row() for s in samples], critic_sample_features(), path)


def load_critic_records(path: str | Path) -> list[CriticSample]:
    """Read and validate every row of a critic parquet file.

    Raises FileNotFoundError naming the path, or RecordError naming the row and field.
    """
    dataset = _read_critic_file(path, critic_sample_features(), "critic records")
    return [CriticSample.from_row(row, where=f"{path} row {i}") for i, row in enumerate(dataset)]


def critic_sft_features() -> datasets.Features:
    """`critic_sample_features()` plus `target`: the critic answer text to learn."""
    import datasets

    return datasets.Features({**critic_sample_features(), TARGET: datasets.Value("string")})


def save_critic_sft_records(
    samples: Sequence[CriticSample], targets: Sequence[str], path: str | Path
) -> Path:
    """Write Critic-SFT records: each sample's fields and its target text."""
    if len(samples) != len(targets):
        raise ValueError(f"{len(samples)} samples but {len(targets)} targets")
    rows = [{**s.to_row(), TARGET: t} for s, t in zip(samples, targets, strict=True)]
    return write_parquet(rows, critic_sft_features(), path)


def load_critic_sft_records(path: str | Path) -> list[tuple[CriticSample, str]]:
    """Read and validate a Critic-SFT parquet file: (sample, target text) per row."""
    dataset = _read_critic_file(path, critic_sft_features(), "critic SFT records")
    records = []
    for i, row in enumerate(dataset):
        target = row[TARGET]
        if not isinstance(target, str) or not target:
            raise RecordError(f"{path} row {i}.{TARGET}: expected the answer text, got {target!r}")
        records.append((CriticSample.from_row(row, where=f"{path} row {i}"), target))
    return records

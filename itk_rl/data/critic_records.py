"""Critic records (`CriticSample`) as a parquet file of a Hugging Face dataset.

Loading validates every row up front, so a bad record stops a run before any actor starts and
the error names the file, the row and the field — not a shape mismatch twenty steps later.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from itk_rl.formats.images import RecordError
from itk_rl.formats.records import CriticSample, critic_sample_features


def save_critic_records(samples: Sequence[CriticSample], path: str | Path) -> Path:
    """Write `samples` to the parquet file `path` (written to a temp name, then renamed)."""
    import datasets

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [sample.to_row() for sample in samples]
    dataset = datasets.Dataset.from_list(rows, features=critic_sample_features())
    partial = path.with_name(path.name + ".partial")
    dataset.to_parquet(str(partial))
    partial.replace(path)
    return path


def load_critic_records(path: str | Path) -> list[CriticSample]:
    """Read and validate every row of a critic parquet file.

    Raises FileNotFoundError naming the path, or RecordError naming the row and field.
    """
    import datasets

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"critic records file not found: {str(path)!r}")
    try:
        dataset = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    except Exception as error:  # arrow/datasets raise many types for a broken file
        raise RecordError(f"{path}: not a readable parquet dataset ({error})") from error
    missing = set(critic_sample_features()) - set(dataset.column_names)
    if missing:
        raise RecordError(f"{path}: missing column(s) {sorted(missing)}")
    return [CriticSample.from_row(row, where=f"{path} row {i}") for i, row in enumerate(dataset)]

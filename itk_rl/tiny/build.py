"""Build every tiny model into one folder once, and reuse it after.

A marker file holding the build settings is written last: a folder without it (a crash
mid-build) or with other settings is rebuilt, one with it is reused as is. A file lock keeps
concurrent callers (test workers, Ray actors on one host) from building the same folder twice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers.utils import logging as hf_logging

from itk_rl.tiny.diffusion import build_tiny_klein
from itk_rl.tiny.tokenizer import build_tokenizer
from itk_rl.tiny.vlm import TinyVLMConfig, build_tiny_vlm

MARKER = "tiny_models.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TinyModelPaths:
    """Where each tiny model lives; every path loads with `from_pretrained(path)`."""

    root: Path
    tokenizer: Path
    qwen2_5_vl: Path
    qwen3_vl: Path
    klein: Path

    @classmethod
    def under(cls, root: Path) -> TinyModelPaths:
        return cls(
            root=root,
            tokenizer=root / "tokenizer",
            qwen2_5_vl=root / "qwen2_5_vl",
            qwen3_vl=root / "qwen3_vl",
            klein=root / "klein",
        )


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' per-save progress bars during the build, then restore the setting."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _spec(
    tokenizer_kind: str, corpus: list[str] | None, vocab_size: int, seed: int, vlm: TinyVLMConfig
) -> dict:
    """Everything the built files depend on; a different spec means a rebuild."""
    digest = None
    if corpus is not None:
        digest = hashlib.sha256("\x00".join(corpus).encode()).hexdigest()
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer_kind": tokenizer_kind,
        "vocab_size": vocab_size if tokenizer_kind == "word" else None,
        "corpus_sha256": digest,
        "seed": seed,
        "vlm": {k: v for k, v in dataclasses.asdict(vlm).items() if k != "family"},
    }


def _read_marker(marker: Path) -> dict | None:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def build_tiny_models(
    out_dir: Path | str,
    *,
    tokenizer_kind: Literal["byte", "word"] = "byte",
    corpus: Iterable[str] | None = None,
    vocab_size: int = 400,
    seed: int = 0,
    vlm_config: TinyVLMConfig | None = None,
) -> TinyModelPaths:
    """Build (or reuse) the tokenizer, both tiny VLM families and the tiny Klein pipeline.

    `corpus` and `vocab_size` train the "word" tokenizer (DESIGN §5: a tiny critic learns only
    with word-level tokens). `vlm_config` sets the sizes of both VLMs (its `family` is ignored).
    The Klein pipeline always uses the byte tokenizer: its prompts are free text.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths = TinyModelPaths.under(root)
    corpus_list = None if corpus is None else list(corpus)
    vlm = vlm_config or TinyVLMConfig()
    spec = _spec(tokenizer_kind, corpus_list, vocab_size, seed, vlm)
    marker = root / MARKER
    with _locked(root):
        if _read_marker(marker) == spec:
            return paths
        marker.unlink(missing_ok=True)
        with _quiet_progress_bars():
            tokenizer = build_tokenizer(tokenizer_kind, corpus_list, vocab_size)
            tokenizer.save_pretrained(paths.tokenizer)
            for family, path in (("qwen2_5_vl", paths.qwen2_5_vl), ("qwen3_vl", paths.qwen3_vl)):
                config = dataclasses.replace(vlm, family=family)
                build_tiny_vlm(path, tokenizer, config, seed=seed)
            build_tiny_klein(paths.klein, seed=seed)
        partial = marker.with_suffix(".tmp")
        partial.write_text(json.dumps(spec, indent=1))
        partial.replace(marker)
    return paths

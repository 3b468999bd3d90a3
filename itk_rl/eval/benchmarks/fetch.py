"""Benchmark data fetched at run time from a pinned revision, into the folder the user would
have downloaded it to.

The data may not ship with itk_rl (licences), so a run either finds the official files where
the recipe says, or fetches them there: GitHub files by raw URL at a commit, hub datasets with
`huggingface_hub` / `datasets` at a revision. Files already present are never fetched again,
so a later run works offline. Offline, or with fetching turned off, the error is
`BenchmarkDataMissing`: the file, where it comes from, and where to put it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import requests

from itk_rl.eval.benchmarks.common import BenchmarkDataMissing
from itk_rl.formats.files import write_atomic, write_atomic_bytes

TIMEOUT_S = 60.0


def raw_github_url(repo: str, commit: str, path: str) -> str:
    """The raw URL of `path` in GitHub repository `owner/name` at `commit`."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def ensure(path: Path, what: str, source: str, fetch: Callable[[], None] | None) -> Path:
    """`path` when it exists; else run `fetch` (None: fetching is off) and check it made it.

    Any failure of `fetch` (no network, 404, an unknown revision) becomes BenchmarkDataMissing
    naming `what`, `source` and `path`, with the reason.
    """
    path = Path(path).expanduser()
    if path.exists():
        return path
    if fetch is None:
        raise BenchmarkDataMissing(path, what, source)
    try:
        fetch()
    except Exception as exc:  # every fetch failure tells the user what to download instead
        reason = f"{source} (fetching it failed: {type(exc).__name__}: {str(exc)[:300]})"
        raise BenchmarkDataMissing(path, what, reason) from None
    if not path.exists():
        raise BenchmarkDataMissing(path, what, f"{source} (the fetch did not provide it)")
    return path


def download(url: str, dest: Path) -> None:
    """GET `url` into `dest`, atomically; raises for any status but 200."""
    response = requests.get(url, timeout=TIMEOUT_S)
    if response.status_code != 200:
        raise OSError(f"GET {url}: HTTP {response.status_code}")
    write_atomic_bytes(Path(dest), response.content)


def github_files(
    root: Path, repo: str, commit: str | None, paths: Iterable[str], what: str
) -> list[Path]:
    """Each of `paths` under `root` (a checkout's layout), fetched from `repo` at `commit`
    when missing (`commit` None: fetching is off)."""
    found = []
    for name in paths:
        url = raw_github_url(repo, commit or "<commit>", name)
        source = f"https://github.com/{repo} ({name} at commit {commit})" if commit else url
        fetch = None if commit is None else (lambda u=url, d=Path(root) / name: download(u, d))
        found.append(ensure(Path(root) / name, f"{what} {name}", source, fetch))
    return found


def hub_files(
    root: Path, repo_id: str, revision: str | None, patterns: list[str]
) -> Callable[[], None] | None:
    """A fetcher that puts the files of hub dataset `repo_id` matching `patterns` under `root`
    (None when `revision` is None: fetching is off)."""
    if revision is None:
        return None

    def fetch() -> None:
        from huggingface_hub import snapshot_download

        snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=revision,
            allow_patterns=patterns,
            local_dir=str(root),
        )

    return fetch


def hub_split_as_jsonl(
    dest: Path,
    repo_id: str,
    revision: str,
    split: str,
    convert: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> None:
    """Load split `split` of hub dataset `repo_id` at `revision` with `datasets` and write its
    rows, each through `convert` (which drops what the harness does not need, such as image
    columns), as JSON lines at `dest`."""
    import datasets

    rows = datasets.load_dataset(repo_id, split=split, revision=revision)
    lines = [json.dumps(convert(row), ensure_ascii=False) for row in rows]
    write_atomic(Path(dest), "\n".join(lines) + "\n")

"""Benchmark data fetched at run time from a pinned revision, into the folder the user would
have downloaded it to.

The data may not ship with itk_rl (licences), so a run either finds the official files where
the recipe says, or fetches them there: GitHub files by raw URL at a commit, hub datasets with
`huggingface_hub` / `datasets` at a revision. Files already present are never fetched again,
so a later run works offline. Offline, or with fetching turned off, the error is
`BenchmarkDataMissing`: the file, where it comes from, and where to put it.

A hub revision that is a branch or tag moves, so the first fetch into a folder resolves it to
its commit, fetches at that commit and records it in `hub_revision.json` there; every later
run of that folder uses the recorded commit (its data never drift) and reports it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from itk_rl.eval.benchmarks.common import BenchmarkDataMissing
from itk_rl.formats.files import write_atomic, write_atomic_bytes

TIMEOUT_S = 60.0
HUB_RECORD = "hub_revision.json"
"""The record of the hub commit a data folder holds: repo, requested revision, sha, files,
fetched_at."""
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")

log = logging.getLogger(__name__)


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


def hub_record(root: Path) -> dict[str, Any] | None:
    """The hub record of data folder `root` (None: nothing was fetched there from the hub)."""
    path = Path(root).expanduser() / HUB_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}); delete it to fetch again") from err
    missing = [key for key in ("repo", "requested_revision", "sha") if key not in record]
    if missing:
        raise ValueError(f"{path}: the hub record lacks {missing}; delete it to fetch again")
    return record


def recorded_sha(root: Path) -> str | None:
    """The hub commit data folder `root` holds, for the run record (None: not fetched from the
    hub by itk_rl, so unknown)."""
    record = hub_record(root)
    return None if record is None else record["sha"]


def pinned_sha(root: Path, repo_id: str, revision: str) -> str | None:
    """The commit data folder `root` holds of hub dataset `repo_id` (None: not recorded yet),
    checked against the recipe's `revision`: a commit must be the recorded one, a branch or tag
    the one the record was pinned from."""
    record = hub_record(root)
    if record is None:
        return None
    path = Path(root).expanduser() / HUB_RECORD
    sha, pinned_from = record["sha"], record["requested_revision"]
    if record["repo"] != repo_id:
        raise ValueError(
            f"{path} records hub dataset {record['repo']}, not {repo_id}: point "
            "benchmark.data_dir at another folder"
        )
    if COMMIT_SHA.fullmatch(revision):
        if revision != sha:
            raise ValueError(
                f"benchmark.revision is commit {revision}, but {path.parent} holds {repo_id} "
                f"at commit {sha} (recorded in {path}): set benchmark.revision={sha}, or point "
                f"benchmark.data_dir at another folder for {revision}"
            )
    elif revision != pinned_from:
        raise ValueError(
            f"benchmark.revision is {revision!r}, but {path.parent} holds {repo_id} at commit "
            f"{sha}, pinned from {pinned_from!r} (recorded in {path}): set "
            f"benchmark.revision={sha}, or point benchmark.data_dir at another folder"
        )
    return sha


def _fetch_pinned(
    root: Path, repo_id: str, revision: str, fetch_at: Callable[[str, list[str]], list[str]]
) -> None:
    """Run `fetch_at(sha, repo_files)` at the commit recorded in `root`, or, the first time,
    at the commit `revision` resolves to now, then record it. `fetch_at` returns the files it
    wrote (relative to `root`); `repo_files` lists the dataset's files at `sha` ([] when the
    commit comes from the record)."""
    sha = pinned_sha(root, repo_id, revision)
    if sha is not None:
        fetch_at(sha, [])
        return
    from huggingface_hub import HfApi

    info = HfApi().dataset_info(repo_id, revision=revision)
    if info.sha is None:
        raise OSError(f"the hub gave no commit for {repo_id} at revision {revision!r}")
    files = fetch_at(info.sha, [sibling.rfilename for sibling in info.siblings or ()])
    record = {
        "repo": repo_id,
        "requested_revision": revision,
        "sha": info.sha,
        "files": sorted(files),
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(root).expanduser() / HUB_RECORD
    write_atomic(path, json.dumps(record, indent=1) + "\n")
    if info.sha != revision:
        log.warning(
            "hub dataset %s: revision %r pinned to commit %s (recorded in %s; later runs of "
            "this folder use it); pin it in the recipe: benchmark.revision=%s",
            repo_id,
            revision,
            info.sha,
            path,
            info.sha,
        )


def hub_files(
    root: Path, repo_id: str, revision: str | None, patterns: list[str]
) -> Callable[[], None] | None:
    """A fetcher that puts the files of hub dataset `repo_id` matching `patterns` under `root`,
    at the commit pinned there (None when `revision` is None: fetching is off). A `revision`
    that contradicts the folder's record raises here, before anything is fetched."""
    if revision is None:
        return None
    pinned_sha(root, repo_id, revision)

    def fetch_at(sha: str, repo_files: list[str]) -> list[str]:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import filter_repo_objects

        snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=sha,
            allow_patterns=patterns,
            local_dir=str(Path(root).expanduser()),
        )
        return list(filter_repo_objects(repo_files, allow_patterns=patterns))

    return lambda: _fetch_pinned(root, repo_id, revision, fetch_at)


def hub_split_as_jsonl(
    root: Path,
    name: str,
    repo_id: str,
    revision: str | None,
    split: str,
    convert: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> Callable[[], None] | None:
    """A fetcher that loads split `split` of hub dataset `repo_id` with `datasets`, at the
    commit pinned in `root`, and writes its rows, each through `convert` (which drops what the
    harness does not need, such as image columns), as JSON lines at `root / name` (None when
    `revision` is None: fetching is off). A contradicting `revision` raises here."""
    if revision is None:
        return None
    pinned_sha(root, repo_id, revision)

    def fetch_at(sha: str, repo_files: list[str]) -> list[str]:
        import datasets

        rows = datasets.load_dataset(repo_id, split=split, revision=sha)
        lines = [json.dumps(convert(row), ensure_ascii=False) for row in rows]
        write_atomic(Path(root).expanduser() / name, "\n".join(lines) + "\n")
        return [name]

    return lambda: _fetch_pinned(root, repo_id, revision, fetch_at)

"""Hub datasets pinned at the first fetch, through the real `huggingface_hub` and `datasets`
against a local stand-in of the hub's HTTP API (`HF_ENDPOINT`).

The hub clients read `HF_ENDPOINT` and `HF_HOME` when imported, so each fetch runs in a child
Python with its own environment (as a user's run would); the stand-in, in this process, records
every request, so a test can tell what a run asked the hub. A branch is resolved once to its
commit, everything is fetched at that commit and the commit is recorded in the data folder;
later runs use the record and ask the hub nothing, even after the branch moved.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from PIL import Image

from itk_rl.eval.benchmarks import BenchmarkDataMissing
from itk_rl.eval.benchmarks.fetch import HUB_RECORD
from itk_rl.eval.harness.rise import RiseBench
from itk_rl.eval.harness.ueval import UEvalBench

REPO = "bench-org/bench"
FIRST = hashlib.sha1(b"first commit").hexdigest()
SECOND = hashlib.sha1(b"second commit").hexdigest()
RISE = "itk_rl.eval.harness.rise.RiseBench"
UEVAL = "itk_rl.eval.harness.ueval.UEvalBench"
RISE_FILE = "datav2_total_w_subtask.json"
CHILD_TIMEOUT_S = 300

CHILD = """
import json, sys
from importlib import import_module
target, kwargs = json.loads(sys.argv[1])
module, name = target.rsplit(".", 1)
bench = getattr(import_module(module), name)(**kwargs)
try:
    keys = [sample.key for sample in bench.samples()]
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"samples": keys, "data": bench.provenance()}))
"""


def blob_id(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass
class FakeHub:
    """One dataset repo: files per commit, branches naming commits; answers the endpoints
    `HfApi.dataset_info`, `snapshot_download` and `datasets.load_dataset` call."""

    commits: dict[str, dict[str, bytes]]
    branches: dict[str, str]
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def asked(self) -> list[str]:
        """The requests about the dataset ("METHOD /path"), leaving out the client's own."""
        with self.lock:
            return [r for r in self.requests if f"/datasets/{REPO}/" in r]

    def __call__(self, request: BaseHTTPRequestHandler, body: bytes) -> tuple:
        url = urlsplit(request.path)
        path = unquote(url.path)
        with self.lock:
            self.requests.append(f"{request.command} {path}")
        api, files = f"/api/datasets/{REPO}/", f"/datasets/{REPO}/resolve/"
        if path.startswith(api + "revision/"):
            sha = self.branches.get(rev := path.removeprefix(api + "revision/"), rev)
            if sha not in self.commits:
                return 404, {"error": "Revision Not Found"}, {"X-Error-Code": "RevisionNotFound"}
            siblings = [{"rfilename": name} for name in self.commits[sha]]
            return 200, {"id": REPO, "sha": sha, "private": False, "siblings": siblings}
        if path.startswith(api + "tree/"):
            rev, _, prefix = path.removeprefix(api + "tree/").partition("/")
            recursive = parse_qs(url.query).get("recursive") == ["true"]
            return 200, self.tree(self.branches.get(rev, rev), prefix, recursive)
        if path.startswith(files):
            rev, _, name = path.removeprefix(files).partition("/")
            sha = self.branches.get(rev, rev)
            data = self.commits.get(sha, {}).get(name)
            if data is None:
                return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
            return 200, data, {"X-Repo-Commit": sha, "ETag": f'"{blob_id(data)}"'}
        return 404, {"error": f"no route {path}"}

    def tree(self, sha: str, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        """The listing of folder `prefix` at `sha`: its files and folders (all below it when
        `recursive`)."""
        base = f"{prefix}/" if prefix else ""
        entries, folders = [], set()
        for name, data in self.commits[sha].items():
            if not name.startswith(base):
                continue
            parts = name[len(base) :].split("/")
            depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
            folders.update(base + "/".join(parts[: i + 1]) for i in range(depth))
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": name, "size": len(data),
                                "oid": blob_id(data)})  # fmt: skip
        entries += [{"type": "directory", "path": f, "oid": blob_id(f.encode()), "size": 0}
                    for f in sorted(folders)]  # fmt: skip
        return entries


def run_child(endpoint: str, home: Path, target: str, **kwargs: Any) -> tuple[dict, str]:
    """Build `target(**kwargs)` in a child Python whose hub is `endpoint` and take its samples:
    (its keys and provenance, or the error; the child's stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.pop("TRANSFORMERS_OFFLINE", None)
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_PROGRESS_BARS="1")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([target, kwargs])],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def closed_endpoint() -> str:
    """A loopback URL nothing answers on: the hub is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def rise_files(instruction: str) -> dict[str, bytes]:
    png = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(png, format="PNG")
    record = {"index": "t1", "category": "temporal_reasoning", "instruction": instruction,
              "image": "images/t1.png", "reference": "r"}  # fmt: skip
    return {RISE_FILE: json.dumps([record]).encode(), "images/t1.png": png.getvalue()}


def rise_kwargs(data: Path, revision: str) -> dict[str, Any]:
    return {"data_dir": str(data), "data_file": RISE_FILE, "source": "hub", "repo": REPO,
            "revision": revision}  # fmt: skip


@pytest.fixture
def pinned_rise(serve_http, tmp_path: Path) -> tuple[FakeHub, str, Path, str]:
    """A RISEBench folder fetched from branch main of the stand-in hub (at FIRST): the hub,
    its URL, the folder, and the child's stderr."""
    hub = FakeHub(commits={FIRST: rise_files("first")}, branches={"main": FIRST})
    url = serve_http(hub)
    data = tmp_path / "rise"
    out, err = run_child(url, tmp_path / "hf", RISE, **rise_kwargs(data, "main"))
    assert out.get("samples") == ["t1"], out
    assert out["data"]["sha"] == FIRST and out["data"]["revision"] == "main"
    return hub, url, data, err


def test_a_branch_is_pinned_at_the_first_fetch(pinned_rise) -> None:
    hub, _, data, err = pinned_rise
    record = json.loads((data / HUB_RECORD).read_text())
    assert {k: record[k] for k in ("repo", "requested_revision", "sha", "files")} == {
        "repo": REPO,
        "requested_revision": "main",
        "sha": FIRST,
        "files": ["datav2_total_w_subtask.json", "images/t1.png"],
    }
    assert record["fetched_at"].endswith("+00:00")
    assert f"'main' pinned to commit {FIRST}" in err
    assert f"benchmark.revision={FIRST}" in err and str(data / HUB_RECORD) in err
    # Resolved once; every file then fetched at the commit, none at the branch.
    asked = hub.asked()
    assert asked[0] == f"GET /api/datasets/{REPO}/revision/main"
    assert all("main" not in request for request in asked[1:])
    fetched = {r for r in asked if r.startswith(f"GET /datasets/{REPO}/resolve/")}
    assert fetched == {f"GET /datasets/{REPO}/resolve/{FIRST}/{n}" for n in record["files"]}


def test_a_later_run_keeps_the_commit_and_asks_the_hub_nothing(pinned_rise, tmp_path) -> None:
    hub, url, data, _ = pinned_rise
    hub.commits[SECOND] = rise_files("second")
    hub.branches["main"] = SECOND  # the branch moves on
    hub.requests.clear()
    out, err = run_child(url, tmp_path / "hf", RISE, **rise_kwargs(data, "main"))
    assert out["samples"] == ["t1"] and out["data"]["sha"] == FIRST
    assert hub.asked() == [] and "pinned to commit" not in err
    assert json.loads((data / RISE_FILE).read_text())[0]["instruction"] == "first"
    # Offline (no hub in this process's reach), the recorded commit named in the recipe works.
    (sample,) = RiseBench(**rise_kwargs(data, FIRST)).samples()
    assert sample.record.instruction == "first"
    assert RiseBench(**rise_kwargs(data, FIRST)).provenance()["sha"] == FIRST


def test_a_revision_that_contradicts_the_folder_is_an_error(pinned_rise) -> None:
    hub, _, data, _ = pinned_rise
    hub.requests.clear()
    with pytest.raises(ValueError, match=r"benchmark\.revision is commit") as caught:
        RiseBench(**rise_kwargs(data, SECOND)).samples()
    message = str(caught.value)
    assert SECOND in message and FIRST in message and str(data) in message
    assert f"set benchmark.revision={FIRST}" in message
    with pytest.raises(ValueError, match=r"is 'v2'.* pinned from 'main'"):
        RiseBench(**rise_kwargs(data, "v2")).samples()
    assert hub.asked() == []


@pytest.mark.parametrize(
    ("target", "data_file", "source"),
    [
        (RISE, RISE_FILE, f"hub dataset {REPO}"),
        (UEVAL, "ueval_test.jsonl", f"hub dataset {REPO} (split test)"),
    ],
)
def test_offline_without_the_files_names_them_and_their_source(
    tmp_path: Path, target: str, data_file: str, source: str
) -> None:
    data = tmp_path / "data"
    kwargs = {"data_dir": str(data), "data_file": data_file, "repo": REPO, "revision": "main"}
    if target == RISE:
        kwargs["source"] = "hub"
    out, _ = run_child(closed_endpoint(), tmp_path / "hf", target, **kwargs)
    assert out["error"] == BenchmarkDataMissing.__name__
    assert f"benchmark data not found: {data / data_file}" in out["message"]
    assert source in out["message"] and "ConnectError" in out["message"]
    assert not (data / HUB_RECORD).exists()


def test_ueval_split_is_exported_at_the_pinned_commit(serve_http, tmp_path: Path) -> None:
    row = {"id": "art_1", "prompt": "q", "task_type": "art", "question_type": "open",
           "text_ref": "t", "image_ref": ["ref.png"], "image_rubrics": ["looks"],
           "text_rubrics": [{"criterion": "c", "tags": ["x"]}]}  # fmt: skip
    files = {"data/test.jsonl": (json.dumps(row) + "\n").encode(), "README.md": b"# UEval\n"}
    hub = FakeHub(commits={FIRST: files}, branches={"main": FIRST})
    url = serve_http(hub)
    data = tmp_path / "ueval"
    kwargs = {"data_dir": str(data), "repo": REPO, "revision": "main"}
    out, err = run_child(url, tmp_path / "hf", UEVAL, **kwargs)
    assert out.get("samples") == ["art_1"], out
    assert out["data"]["sha"] == FIRST and f"benchmark.revision={FIRST}" in err
    record = json.loads((data / HUB_RECORD).read_text())
    assert (record["sha"], record["files"]) == (FIRST, ["ueval_test.jsonl"])
    asked = hub.asked()
    assert asked[0] == f"GET /api/datasets/{REPO}/revision/main"
    assert any(r == f"GET /datasets/{REPO}/resolve/{FIRST}/data/test.jsonl" for r in asked)
    assert all("main" not in request for request in asked[1:])  # `datasets` asked at the commit
    exported = json.loads((data / "ueval_test.jsonl").read_text())
    assert "image_ref" not in exported and exported["text_rubrics"][0]["criterion"] == "c"
    # A later run reads the export: nothing asked, even with the branch moved.
    hub.branches["main"] = SECOND
    hub.requests.clear()
    (sample,) = UEvalBench(**kwargs).samples()
    assert sample.record.text_rubrics == ("c",) and hub.asked() == []
    assert UEvalBench(**kwargs).provenance()["sha"] == FIRST

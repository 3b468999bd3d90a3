"""No API key reaches what a run writes to `output_dir` or its job log.

recipes/judge/vlm_api.yaml names the environment variable holding the key (`api_key_env`), so
the recipe, and the `config.yaml` written from it, hold only that name. Two checks with a fake
key in the environment: the GRPO driver itself (`python -m itk_rl.train` on critic_grpo, which
writes config.yaml and Hydra's files and log, then stops at the missing data), and the API judge
calling a loopback server that echoes the key in its error (as proxies do) before answering,
its error logged and its scores recorded as metrics (metrics.jsonl and TensorBoard).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from hydra.utils import instantiate

from itk_rl.job import compose_recipe, open_metrics, plain, record, start_run
from itk_rl.rollout.http_engine import EngineHTTPError

ANSWER = '<answer>{"prompt_following": 7, "naturalness": 8, "artifacts": 9}</answer>'


@pytest.fixture
def fake_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = f"sk-itk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", key)  # recipes/judge/vlm_api.yaml's api_key_env
    return key


class EchoingAPI(BaseHTTPRequestHandler):
    """Chat completions that first fail echoing the caller's Authorization header, then answer;
    every header it was sent is kept in `seen`."""

    seen: ClassVar[list[str]] = []
    failures_left: ClassVar[int] = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        auth = self.headers.get("Authorization", "")
        type(self).seen.append(auth)
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            status, body = 401, {"error": {"message": f"invalid credentials: {auth}"}}
        else:
            status, body = 200, {"choices": [{"index": 0, "message": {"content": ANSWER}}]}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads `seen`."""


@pytest.fixture
def echoing_api() -> Iterator[str]:
    """Base URL of an EchoingAPI on loopback."""
    EchoingAPI.seen, EchoingAPI.failures_left = [], 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    thread.join()


def _files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_the_grpo_driver_writes_no_key_to_output_dir_or_its_log(
    fake_key: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "itk_rl.train", "--config-name", "critic_grpo"]
    command += [f"output_dir={out}", f"data.train_path={tmp_path / 'missing.parquet'}"]
    run = subprocess.run(
        command, env=os.environ, capture_output=True, text=True, timeout=120, check=False
    )
    # It stops at the data, after writing what a run writes first.
    assert run.returncode != 0 and "missing.parquet" in run.stdout + run.stderr
    assert (out / "config.yaml").is_file() and (out / "hydra" / "train.log").is_file()
    assert "api_key_env: OPENAI_API_KEY" in (out / "config.yaml").read_text()
    assert _files_holding(out, fake_key) == []
    assert fake_key not in run.stdout + run.stderr


def test_the_api_judges_key_stays_out_of_errors_logs_and_metrics(
    fake_key: str, echoing_api: str, tmp_path: Path
) -> None:
    overrides = [f"output_dir={tmp_path / 'run'}", "prepare=null"]
    overrides += [f"judge.component.engine.base_url={echoing_api}"]
    overrides += ["judge.component.engine.max_retries=0"]
    cfg = compose_recipe("critic_grpo", overrides)
    out = start_run(cfg)
    judge = instantiate(plain(cfg.judge.component))
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    log_file = logging.FileHandler(out / "train.log")
    logging.getLogger().addHandler(log_file)
    try:
        with pytest.raises(EngineHTTPError) as failed:  # the server rejected the first call
            judge.score_batch(["a red circle"], [image])
        logging.getLogger("itk_rl.test").error("judge call failed: %s", failed.value)
        (score,) = judge.score_batch(["a red circle"], [image])
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    assert score is not None
    metrics = open_metrics(out, 0)
    record(out, metrics, 1, {"reward/sem": score.semantics, "reward/qual": score.quality})
    metrics.close()

    assert f"Bearer {fake_key}" in EchoingAPI.seen  # the key was really sent
    assert "invalid credentials: Bearer <redacted>" in (out / "train.log").read_text()
    assert (out / "metrics.jsonl").is_file() and list((out / "tensorboard").iterdir())
    assert _files_holding(out, fake_key) == []
    assert fake_key not in repr(judge) + repr(failed.value)

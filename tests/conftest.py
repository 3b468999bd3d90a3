"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

# First: applies the torchvision CPU work-around before any test module imports transformers.
import itk_rl  # noqa: F401

if TYPE_CHECKING:
    from itk_rl.tiny import TinyModelPaths


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """Tiny tokenizer, Qwen2.5-VL, Qwen3-VL and Klein, built once per session (< 1 s)."""
    from itk_rl.tiny import build_tiny_models  # transformers and diffusers: import when used

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray cluster for the session (starting one costs 3–6 s).

    Logical CPUs are oversubscribed (8 on a 2-core machine) so tests can place trainer ranks,
    rollout workers, generators and judges at once; tests must not rely on real parallelism.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a stale ~/.ray token must not matter
    ray.init(num_cpus=8, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


STOP_WAIT_S = 5.0
# (status, body) or (status, body, headers): a dict body is sent as JSON, bytes as they are.
Reply = tuple[int, dict[str, Any] | bytes] | tuple[int, dict[str, Any] | bytes, dict[str, str]]
# Called on the server's threads with the request (method, path, headers) and its body bytes.
Handle = Callable[[BaseHTTPRequestHandler, bytes], Reply]


@pytest.fixture
def serve_http() -> Iterator[Callable[[Handle], str]]:
    """`serve_http(handle)` starts a server on 127.0.0.1 answering GET, HEAD and POST with
    `handle` (a HEAD gets the GET's status and headers, no body) and returns its root URL
    (`http://127.0.0.1:PORT`); every server stops after the test. Each test module scripts the
    server as one function from a request to a reply, so it reads as the API it emulates."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def serve(handle: Handle) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(b"")

            def do_HEAD(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers["Content-Length"])))

            def _answer(self, body: bytes) -> None:
                status, reply, *extra = handle(self, body)
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                kind = (
                    "application/octet-stream" if isinstance(reply, bytes) else "application/json"
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (extra[0] if extra else {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except OSError:  # the client gave up (time-out tests)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        running.append((httpd, thread))
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(STOP_WAIT_S)

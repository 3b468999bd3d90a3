"""A loopback HTTP server for the API clients' tests (chat engine, images generator).

Each test module scripts the server as one function from a request to a reply, so it reads as
the API it emulates; starting, answering and stopping the server is done here once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

STOP_WAIT_S = 5.0
# (status, body): a dict is sent as JSON, bytes as they are.
Reply = tuple[int, dict[str, Any] | bytes]
# Called on the server's threads with the request (method, path, headers) and its body bytes.
Handle = Callable[[BaseHTTPRequestHandler, bytes], Reply]


@pytest.fixture
def serve_http() -> Iterator[Callable[[Handle], str]]:
    """`serve_http(handle)` starts a server on 127.0.0.1 answering GET and POST with `handle`
    and returns its root URL (`http://127.0.0.1:PORT`); every server stops after the test."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def serve(handle: Handle) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers["Content-Length"])))

            def _answer(self, body: bytes) -> None:
                status, reply = handle(self, body)
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                kind = (
                    "application/octet-stream" if isinstance(reply, bytes) else "application/json"
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
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

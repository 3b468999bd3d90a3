"""OpenAIChatEngine against a real local HTTP server that emulates `/v1/chat/completions`.

The server checks the bearer key, decodes the PNG data URLs back to arrays and answers with
scripted choices; each test swaps in its own `respond(call)` to script failures.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import pytest
from PIL import Image

from itk_rl.interfaces.engine import ChatRequest, SamplingParams
from itk_rl.rollout.http_engine import EngineHTTPError, OpenAIChatEngine

KEY = "sk-test-5e3f9a1c0d7b"
KEY_ENV = "ITK_TEST_CHAT_KEY"
WAIT_S = 5.0  # upper bound for event waits, so a broken engine fails instead of hanging


@dataclass
class Call:
    """One request as the server saw it: the JSON payload and its images decoded to arrays."""

    payload: dict[str, Any]
    images: list[np.ndarray]
    authorization: str | None


Reply = tuple[int, dict[str, Any]]


@dataclass
class FakeServer:
    url: str
    respond: Callable[[Call], Reply]
    calls: list[Call] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for_calls(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.calls) >= count, WAIT_S)


def echo(call: Call) -> Reply:
    """Honours `n`; each choice names the last text part and the choice index."""
    text = _last_text(call.payload["messages"])
    n = call.payload.get("n", 1)
    return 200, _choices([f"{text}#{i}" for i in range(n)])


def _choices(texts: list[str]) -> dict[str, Any]:
    return {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ]
    }


def _last_text(messages: list[dict[str, Any]]) -> str:
    content = messages[-1]["content"]
    if isinstance(content, str):
        return content
    return [p["text"] for p in content if p["type"] == "text"][-1]


def _decode(messages: list[dict[str, Any]]) -> list[np.ndarray]:
    images = []
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for part in message["content"]:
            if part["type"] == "image_url":
                header, data = part["image_url"]["url"].split(",", 1)
                assert header == "data:image/png;base64"
                images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))))
    return images


@pytest.fixture
def server(
    monkeypatch: pytest.MonkeyPatch, serve_http: Callable[[Callable[..., Reply]], str]
) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_ENV, KEY)

    def handle(request: BaseHTTPRequestHandler, body: bytes) -> Reply:
        if (request.command, request.path) != ("POST", "/v1/chat/completions"):
            return 404, {"error": {"message": f"no route {request.command} {request.path}"}}
        payload = json.loads(body)
        call = Call(payload, _decode(payload["messages"]), request.headers.get("Authorization"))
        with fake.changed:
            fake.calls.append(call)
            fake.changed.notify_all()
        if call.authorization != f"Bearer {KEY}":
            return 401, {"error": {"message": "bad key"}}
        return fake.respond(call)

    fake = FakeServer(url=serve_http(handle) + "/v1", respond=echo)
    yield fake
    fake.release.set()


@pytest.fixture
def make_engine(server: FakeServer) -> Iterator[Callable[..., OpenAIChatEngine]]:
    engines: list[OpenAIChatEngine] = []

    def make(**overrides: Any) -> OpenAIChatEngine:
        kwargs = dict(
            base_url=server.url,
            model="tiny-vlm",
            api_key_env=KEY_ENV,
            timeout_s=5.0,
            max_retries=3,
            backoff_s=0.001,
            max_backoff_s=0.01,
        )
        engine = OpenAIChatEngine(**{**kwargs, **overrides})
        engines.append(engine)
        return engine

    yield make
    server.release.set()  # unblock handlers before joining the engine's threads
    for engine in engines:
        engine.close()


def _request(text: str, images: tuple[np.ndarray, ...] = (), seed: int | None = None):
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": content})
    return ChatRequest(messages=messages, images=images, seed=seed)


def _image(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_batch_in_order_with_images_and_params(server: FakeServer, make_engine) -> None:
    # Request 0 is answered only after request 2, so completion order differs from input order.
    r2_answered = threading.Event()

    def respond(call: Call) -> Reply:
        text = _last_text(call.payload["messages"])
        if text == "r0":
            assert r2_answered.wait(WAIT_S)
        reply = echo(call)
        if text == "r2":
            r2_answered.set()
        return reply

    server.respond = respond
    images = [(_image(0, 8, 12),), (), (_image(1, 5, 7), _image(2, 16, 4)), (_image(3, 3, 3),)]
    requests = [_request(f"r{i}", imgs, seed=10 + i) for i, imgs in enumerate(images)]
    requests[1] = ChatRequest(messages=({"role": "user", "content": "r1"},))  # plain string
    engine = make_engine(max_concurrency=3)
    params = SamplingParams(max_new_tokens=17, temperature=0.7, top_p=0.9, n=2)

    out = engine.generate(requests, params)

    assert [[c.text for c in group] for group in out] == [[f"r{i}#0", f"r{i}#1"] for i in range(4)]
    assert all(c.token_ids is None and c.logprobs is None for group in out for c in group)
    by_text = {_last_text(c.payload["messages"]): c for c in server.calls}
    assert len(server.calls) == 4
    for i, imgs in enumerate(images):
        call = by_text[f"r{i}"]
        assert call.authorization == f"Bearer {KEY}"
        assert len(call.images) == len(imgs)
        for sent, got in zip(imgs, call.images, strict=True):
            np.testing.assert_array_equal(got, sent)
        p = call.payload
        assert (p["model"], p["max_tokens"], p["temperature"], p["top_p"], p["n"]) == (
            "tiny-vlm", 17, 0.7, 0.9, 2,
        )  # fmt: skip
        assert p.get("seed") == (None if i == 1 else 10 + i)
    assert by_text["r0"].payload["messages"][0] == {"role": "system", "content": "Be brief."}
    assert by_text["r1"].payload["messages"] == [{"role": "user", "content": "r1"}]


def test_server_ignoring_n_gets_further_calls(server: FakeServer, make_engine) -> None:
    server.respond = lambda call: (200, _choices([f"seed {call.payload['seed']}"]))
    out = make_engine().generate([_request("hi", seed=7)], SamplingParams(n=3))
    assert [c.text for c in out[0]] == ["seed 7", "seed 8", "seed 9"]
    assert [c.payload["n"] for c in server.calls] == [3, 2, 1]


def test_extra_choices_are_cut_to_n(server: FakeServer, make_engine) -> None:
    server.respond = lambda call: (200, _choices(["a", "b", "c"]))
    out = make_engine().generate([_request("hi")], SamplingParams(n=2))
    assert [c.text for c in out[0]] == ["a", "b"]


@pytest.mark.parametrize("status", [503, 429, 500])
def test_retries_then_succeeds(server: FakeServer, make_engine, status: int) -> None:
    def respond(call: Call) -> Reply:
        if len(server.calls) <= 2:
            return status, {"error": {"message": "busy"}}
        return echo(call)

    server.respond = respond
    out = make_engine(max_retries=2).generate([_request("hi")], SamplingParams())
    assert [c.text for c in out[0]] == ["hi#0"]
    assert len(server.calls) == 3


def test_client_error_fails_at_once(server: FakeServer, make_engine) -> None:
    server.respond = lambda call: (400, {"error": {"message": "max_tokens is too large"}})
    with pytest.raises(EngineHTTPError) as info:
        make_engine(max_retries=5).generate([_request("hi")], SamplingParams())
    assert len(server.calls) == 1
    assert info.value.status == 400 and info.value.attempts == 1
    text = str(info.value)
    assert server.url + "/chat/completions" in text
    assert "400" in text and "max_tokens is too large" in text


def test_server_errors_exhaust_retries_with_truncated_message(
    server: FakeServer, make_engine
) -> None:
    server.respond = lambda call: (503, {"message": "overloaded " + "x" * 5000})
    with pytest.raises(EngineHTTPError) as info:
        make_engine(max_retries=2).generate([_request("hi")], SamplingParams())
    assert len(server.calls) == 3
    assert info.value.status == 503 and info.value.attempts == 3
    assert "overloaded" in str(info.value) and len(str(info.value)) < 1000


def test_timeouts_raise_after_retries(server: FakeServer, make_engine) -> None:
    def respond(call: Call) -> Reply:
        server.release.wait(WAIT_S)
        return echo(call)

    server.respond = respond
    with pytest.raises(EngineHTTPError) as info:
        make_engine(timeout_s=0.2, max_retries=1).generate([_request("hi")], SamplingParams())
    assert info.value.status is None and info.value.attempts == 2
    assert "Timeout" in str(info.value)
    server.wait_for_calls(2)
    assert len(server.calls) == 2


def test_connection_refused_is_retried(make_engine) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = make_engine(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(EngineHTTPError) as info:
        engine.generate([_request("hi")], SamplingParams())
    assert info.value.status is None and info.value.attempts == 3
    assert f"127.0.0.1:{port}" in str(info.value)


def test_key_never_leaks(server: FakeServer, make_engine) -> None:
    # A server that echoes the header it got, as some APIs do when rejecting a key.
    server.respond = lambda call: (500, {"error": {"message": f"got {call.authorization}"}})
    engine = make_engine(max_retries=1)
    assert KEY not in repr(engine) and KEY not in str(engine)
    with pytest.raises(EngineHTTPError) as info:
        engine.generate([_request("hi")], SamplingParams())
    err = info.value
    assert "got Bearer <redacted>" in str(err)
    for text in (str(err), repr(err), err.message, *map(str, err.args)):
        assert KEY not in text
    assert err.__cause__ is None and err.__context__ is None


def test_placeholder_image_mismatch_fails_before_sending(server: FakeServer, make_engine) -> None:
    bad = ChatRequest(
        messages=({"role": "user", "content": [{"type": "image"}, {"type": "image"}]},),
        images=(_image(0, 4, 4),),
    )
    with pytest.raises(ValueError, match=r"request 1: 2 image placeholder\(s\).* 1 image\(s\)"):
        make_engine().generate([_request("fine"), bad], SamplingParams())
    assert server.calls == []


def test_bad_image_array_is_named(make_engine) -> None:
    request = _request("hi", (np.zeros((4, 4), dtype=np.uint8),))
    with pytest.raises(
        ValueError, match=r"request 0, image 0 must be a uint8 array of shape \[H, W, 3\]"
    ):
        make_engine().generate([request], SamplingParams())


def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ITK_TEST_UNSET_KEY", raising=False)
    with pytest.raises(ValueError, match="ITK_TEST_UNSET_KEY"):
        OpenAIChatEngine("http://127.0.0.1:1/v1", "m", api_key_env="ITK_TEST_UNSET_KEY")


def test_no_key_sends_no_authorization(server: FakeServer, make_engine) -> None:
    engine = make_engine(api_key_env=None)
    with pytest.raises(EngineHTTPError, match="401"):
        engine.generate([_request("hi")], SamplingParams())
    assert server.calls[0].authorization is None


def test_logprobs_are_read_when_returned(server: FakeServer, make_engine) -> None:
    def respond(call: Call) -> Reply:
        assert call.payload["logprobs"] is True
        body = _choices(["ab"])
        body["choices"][0]["logprobs"] = {
            "content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.25}]
        }
        return 200, body

    server.respond = respond
    out = make_engine(logprobs=True).generate([_request("hi")], SamplingParams())
    assert out[0][0].logprobs == (-0.5, -1.25)


def test_pickled_engine_still_works(server: FakeServer, make_engine) -> None:
    # Ray ships engines between processes; threads and sessions must be rebuilt, not pickled.
    engine = make_engine()
    engine.generate([_request("warm")], SamplingParams())
    state = pickle.dumps(engine)
    assert KEY.encode() not in state  # the key is read again from the environment
    clone = pickle.loads(state)
    try:
        assert clone.generate([_request("hi")], SamplingParams())[0][0].text == "hi#0"
    finally:
        clone.close()

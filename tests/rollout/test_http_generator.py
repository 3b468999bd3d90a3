"""OpenAIImageGenerator against a real local HTTP server that emulates `/v1/images/generations`
(JSON) and `/v1/images/edits` (multipart): requests in order, references sent losslessly,
retries, time-outs, and the key kept out of errors and pickles."""

from __future__ import annotations

import base64
import io
import json
import pickle
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import pytest
from PIL import Image

from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rollout.http_client import EngineHTTPError
from itk_rl.rollout.http_generator import OpenAIImageGenerator

KEY = "sk-test-images-81c2"
KEY_ENV = "ITK_TEST_IMAGES_KEY"
WAIT_S = 5.0


@dataclass
class Call:
    path: str
    fields: dict[str, str]
    images: list[np.ndarray]
    authorization: str | None


Reply = tuple[int, dict[str, Any] | bytes]


def _png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def solid(call: Call) -> Reply:
    """A 6 x 4 image whose red channel is the prompt's length (so answers are told apart)."""
    image = np.zeros((6, 4, 3), np.uint8)
    image[..., 0] = len(call.fields["prompt"])
    return 200, {"data": [{"b64_json": _png(image)}]}


@dataclass
class FakeServer:
    url: str
    respond: Callable[[Call], Reply]
    calls: list[Call] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    files: dict[str, bytes] = field(default_factory=dict)
    """What GET serves, by path (answers given as `url`)."""


@pytest.fixture
def server(
    monkeypatch: pytest.MonkeyPatch, serve_http: Callable[[Callable[..., Reply]], str]
) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_ENV, KEY)

    def handle(request: BaseHTTPRequestHandler, body: bytes) -> Reply:
        if request.command == "GET":
            if request.path not in fake.files:
                return 404, {"error": {"message": f"no file {request.path}"}}
            return 200, fake.files[request.path]
        kind = request.headers.get("Content-Type", "")
        if kind.startswith("application/json"):
            fields, images = json.loads(body), []
        else:  # multipart/form-data: text fields and image files
            message = BytesParser(policy=email_policy).parsebytes(
                f"Content-Type: {kind}\r\n\r\n".encode() + body
            )
            fields, images = {}, []
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                data = part.get_payload(decode=True)
                if part.get_filename():
                    images.append((name, _decode(data)))
                else:
                    fields[name] = data.decode()
            fields["_image_fields"] = [name for name, _ in images]
            images = [image for _, image in images]
        call = Call(request.path, fields, images, request.headers.get("Authorization"))
        fake.calls.append(call)
        if call.authorization != f"Bearer {KEY}":
            return 401, {"error": {"message": f"bad key {KEY}"}}
        return fake.respond(call)

    fake = FakeServer(url=serve_http(handle) + "/v1", respond=solid)
    yield fake
    fake.release.set()


@pytest.fixture
def make_generator(server: FakeServer) -> Iterator[Callable[..., OpenAIImageGenerator]]:
    made: list[OpenAIImageGenerator] = []

    def make(**overrides: Any) -> OpenAIImageGenerator:
        kwargs = dict(
            base_url=server.url,
            model="tiny-image",
            api_key_env=KEY_ENV,
            size="4x6",
            timeout_s=5.0,
            max_retries=2,
            backoff_s=0.001,
            max_backoff_s=0.01,
        )
        generator = OpenAIImageGenerator(**{**kwargs, **overrides})
        made.append(generator)
        return generator

    yield make
    server.release.set()
    for generator in made:
        generator.close()


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_text_to_image_and_edits_in_order(server: FakeServer, make_generator) -> None:
    generator = make_generator(max_concurrency=3, send_seed=True, extra_body={"quality": "low"})
    one, two = _image(0), _image(1)
    requests = [
        RenderRequest("a red circle", seed=3),
        RenderRequest("make it blue", references=(one,), seed=4),
        RenderRequest("put them together", references=(one, two), seed=5),
    ]
    images = generator(requests)
    assert [int(image[0, 0, 0]) for image in images] == [len(r.prompt) for r in requests]
    assert all(image.shape == (6, 4, 3) and image.dtype == np.uint8 for image in images)
    by_prompt = {call.fields["prompt"]: call for call in server.calls}
    t2i = by_prompt["a red circle"]
    assert t2i.path == "/v1/images/generations" and t2i.authorization == f"Bearer {KEY}"
    assert (t2i.fields["model"], t2i.fields["size"], t2i.fields["n"]) == ("tiny-image", "4x6", 1)
    assert (t2i.fields["seed"], t2i.fields["quality"]) == (3, "low")
    edit = by_prompt["make it blue"]
    assert edit.path == "/v1/images/edits" and edit.fields["_image_fields"] == ["image"]
    assert edit.fields["seed"] == "4" and edit.fields["model"] == "tiny-image"
    np.testing.assert_array_equal(edit.images[0], one)  # PNG: lossless
    both = by_prompt["put them together"]
    assert both.fields["_image_fields"] == ["image[]", "image[]"]
    np.testing.assert_array_equal(both.images[1], two)


def test_url_answers_are_fetched_and_no_seed_is_sent_unless_asked(
    server: FakeServer, make_generator
) -> None:
    image = np.full((3, 3, 3), 200, np.uint8)
    server.files["/files/x.png"] = base64.b64decode(_png(image))
    root = server.url.removesuffix("/v1")
    server.respond = lambda call: (200, {"data": [{"url": root + "/files/x.png"}]})
    generator = make_generator()
    np.testing.assert_array_equal(generator([RenderRequest("hi")])[0], image)
    assert "seed" not in server.calls[0].fields
    server.respond = lambda call: (200, {"data": [{"url": root + "/files/gone.png"}]})
    with pytest.raises(EngineHTTPError, match=r"files/gone\.png"):
        generator([RenderRequest("hi")])
    server.respond = lambda call: (200, {"data": [{}]})
    with pytest.raises(EngineHTTPError, match="neither b64_json nor url"):
        generator([RenderRequest("hi")])


@pytest.mark.parametrize("status", [429, 503])
def test_passing_failures_are_retried(server: FakeServer, make_generator, status: int) -> None:
    def respond(call: Call) -> Reply:
        return (status, {"error": {"message": "busy"}}) if len(server.calls) < 3 else solid(call)

    server.respond = respond
    assert make_generator(max_retries=2)([RenderRequest("ab")])[0][0, 0, 0] == 2
    assert len(server.calls) == 3


def test_client_errors_fail_at_once_and_never_show_the_key(
    server: FakeServer, make_generator
) -> None:
    server.respond = lambda call: (400, {"error": {"message": f"bad size; key was {KEY}"}})
    generator = make_generator(max_retries=5)
    with pytest.raises(EngineHTTPError) as info:
        generator([RenderRequest("hi")])
    assert len(server.calls) == 1 and info.value.status == 400
    assert "bad size" in str(info.value) and KEY not in str(info.value)
    assert KEY not in repr(generator)
    assert KEY not in pickle.dumps(generator).decode("latin-1")


def test_timeouts_raise_after_retries(server: FakeServer, make_generator) -> None:
    def respond(call: Call) -> Reply:
        server.release.wait(WAIT_S)
        return solid(call)

    server.respond = respond
    with pytest.raises(EngineHTTPError) as info:
        make_generator(timeout_s=0.2, max_retries=1)([RenderRequest("hi")])
    assert info.value.status is None and info.value.attempts == 2


def test_bad_input_and_missing_key_are_named(
    monkeypatch: pytest.MonkeyPatch, make_generator
) -> None:
    with pytest.raises(ValueError, match="render request 0: the prompt is empty"):
        make_generator()([RenderRequest("  ")])
    with pytest.raises(ValueError, match="reference 0"):
        make_generator()([RenderRequest("x", references=(np.zeros((2, 2)),))])
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ValueError, match=KEY_ENV):
        make_generator()


def test_pickled_generator_still_works(server: FakeServer, make_generator) -> None:
    clone = pickle.loads(pickle.dumps(make_generator()))
    try:
        assert clone([RenderRequest("abc")])[0][0, 0, 0] == 3
    finally:
        clone.close()

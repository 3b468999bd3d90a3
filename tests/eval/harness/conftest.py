"""A local OpenAI-compatible server for the harness tests (`fake_api`): chat completions for the
planner, the critic and every benchmark judge (each call's role is read from its system text),
and the text-to-image endpoint for an API generator. Each test scripts the answers per role;
every call is recorded, so a test can count what a run asked. Helpers come with the fixture's
object (the suite imports test modules by path, so they cannot import each other)."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from itk_rl.cli import main
from itk_rl.eval.benchmarks.templates import JUDGE_ROLES, load_judge_template
from itk_rl.formats import CriticVerdict, Plan, Step, format_critic_answer, format_planner_answer
from itk_rl.formats.templates import load_template
from itk_rl.testbed import Scene, ShapeObject, render

KEY = "sk-harness-test-3f1d"
KEY_ENV = "ITK_TEST_HARNESS_KEY"


@dataclass
class Call:
    role: str
    texts: list[str]
    """Every text part of the conversation, system first."""
    images: list[np.ndarray]
    payload: dict[str, Any]

    @property
    def user(self) -> str:
        """The user message's first text (the rendered template)."""
        return self.texts[1] if len(self.texts) > 1 else self.texts[0]


def _roles() -> dict[str, str]:
    """System text → role, for every template a run can send."""
    systems = {load_judge_template(role).system: role for role in JUDGE_ROLES}
    for name in ("planner", "critic"):
        systems[load_template(name).system] = name
    return systems


def one_step_plan(call: Call) -> str:
    step = Step(1, "Picture", "Draw it.", "draw a red circle on the left", "A red circle.")
    return format_planner_answer(Plan((step,)), "One picture answers it.")


def two_step_plan(call: Call) -> str:
    steps = (
        Step(1, "Circle", "Draw a circle.", "draw a red circle on the left", "First, a circle."),
        Step(2, "Square", "Add a square.", "add a blue square on the right", "Then a square."),
    )
    return format_planner_answer(Plan(steps), "Two pictures answer it.")


def accept(call: Call) -> str:
    return format_critic_answer(CriticVerdict(True, "", "Looks right."))


@dataclass
class FakeAPI:
    url: str
    roles: dict[str, str] = field(default_factory=dict)
    """System text → role (a test adds its own templates' texts)."""
    answers: dict[str, Callable[[Call], str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    image_calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> Counter:
        """Calls per role (images: the generator's)."""
        with self.lock:
            counts = Counter(call.role for call in self.calls)
            counts["images"] += len(self.image_calls)
        return +counts

    def of(self, role: str) -> list[Call]:
        with self.lock:
            return [call for call in self.calls if call.role == role]

    def overrides(self, system: str = "interleave", api_generator: bool = False) -> list[str]:
        """`system` with its agents and the judge on this server, on the testbed generator
        (or, `api_generator`, on this server's images endpoint)."""
        words = [f"system={system}", "generator=testbed", "generator.misrender_prob=0.0"]
        if api_generator:
            words = [f"system={system}", "generator=openai_images", "generator.max_retries=0"]
            words += [f"generator.base_url={self.url}", f"generator.api_key_env={KEY_ENV}"]
        agents = {"interleave": ("planner", "critic"), "planner_only": ("planner",)}
        agents = agents.get(system, ())
        words += [f"{agent}=api_teacher" for agent in agents]
        for node in (*(f"{agent}.engine" for agent in agents), "judge.engine"):
            words += [f"{node}.base_url={self.url}", f"{node}.api_key_env={KEY_ENV}"]
            words += [f"{node}.max_retries=0"]
        return words

    @staticmethod
    def run(benchmark: str, run: Path, *words: str, yes: bool = True) -> int:
        """`itk eval BENCHMARK WORDS --out RUN --yes`."""
        return main(["eval", benchmark, *words, "--out", str(run), *(["--yes"] if yes else [])])

    one_step_plan = staticmethod(one_step_plan)
    two_step_plan = staticmethod(two_step_plan)

    @staticmethod
    def scene_image(colour: str = "red", shape: str = "circle") -> np.ndarray:
        """A testbed picture (48 x 48) with one shape in the middle."""
        return render(Scene.of(centre=ShapeObject(shape, colour)))

    @staticmethod
    def write_png(path: Path, image: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)


def _texts_and_images(messages: list[dict[str, Any]]) -> tuple[list[str], list[np.ndarray]]:
    texts, images = [], []
    for message in messages:
        content = message["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                data = part["image_url"]["url"].split(",", 1)[1]
                images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))))
    return texts, images


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPI]:
    monkeypatch.setenv(KEY_ENV, KEY)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                return self._send(401, {"error": {"message": "bad key"}})
            if self.path == "/v1/images/generations":
                with fake.lock:
                    fake.image_calls.append(body)
                image = render(Scene.of(left=ShapeObject("circle", "green")))
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                b64 = base64.b64encode(buffer.getvalue()).decode()
                return self._send(200, {"data": [{"b64_json": b64}]})
            texts, images = _texts_and_images(body["messages"])
            call = Call(fake.roles.get(texts[0], "unknown"), texts, images, body)
            with fake.lock:
                fake.calls.append(call)
            answer = fake.answers.get(call.role)
            if answer is None:
                return self._send(500, {"error": {"message": f"no answer for {call.role}"}})
            choice = {"index": 0, "message": {"role": "assistant", "content": answer(call)}}
            self._send(200, {"choices": [choice]})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    fake = FakeAPI(url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", roles=_roles())
    fake.answers.update(planner=one_step_plan, critic=accept)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)

"""An `ImageGenerator` over an OpenAI-compatible images API: `/images/generations` for
text-to-image, `/images/edits` for edits.

So the paper's API baselines (GPT-Image, Nano-Banana-class models behind an OpenAI-compatible
gateway) run in every place a local generator does: the pipeline, the benchmark harness, the
generator pool. Reference images travel as PNG files in a multipart form (lossless); answers are
read from `b64_json` or fetched from `url`. The API key is read from an environment variable
named in the config and kept out of `repr`, pickles and every error message.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from itk_rl.formats.images import check_image, encode_png
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rollout.http_client import EngineHTTPError, OpenAICompatibleClient


class OpenAIImageGenerator(OpenAICompatibleClient):
    """Renders each request of a batch with one API call, `max_concurrency` at a time.

    Key, retries and backoff as in `OpenAICompatibleClient`. `size` is sent as "WxH" (null: the
    API's default). `send_seed` adds the request's seed to the body for servers that honour one
    (OpenAI's does not). `extra_body` is added to every call (e.g. `{"quality": "high"}`).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        size: str | None = "1024x1024",
        timeout_s: float = 300.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_concurrency: int = 4,
        send_seed: bool = False,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            base_url,
            model,
            api_key_env,
            timeout_s,
            max_retries,
            backoff_s,
            max_backoff_s,
            max_concurrency,
        )
        self.size, self.send_seed = size, send_seed
        self.extra_body = dict(extra_body or {})
        root = base_url.rstrip("/")
        self.generations_url, self.edits_url = f"{root}/images/generations", f"{root}/images/edits"

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        """One `[H, W, 3]` uint8 image per request, in input order."""
        for index, request in enumerate(requests):
            if not isinstance(request.prompt, str) or not request.prompt.strip():
                raise ValueError(f"render request {index}: the prompt is empty")
            for k, image in enumerate(request.references):
                check_image(image, f"render request {index}, reference {k}")
        return self._map(self._render, requests)

    def _render(self, request: RenderRequest) -> np.ndarray:
        fields: dict[str, Any] = {"model": self.model, "prompt": request.prompt, "n": 1}
        if self.size is not None:
            fields["size"] = self.size
        if self.send_seed:
            fields["seed"] = request.seed
        fields.update(self.extra_body)
        if not request.is_edit:
            body = self._post(self.generations_url, json=fields)
        else:
            # One reference goes as `image`, several as the `image[]` array.
            name = "image" if len(request.references) == 1 else "image[]"
            files = [
                (name, (f"reference_{k}.png", encode_png(image), "image/png"))
                for k, image in enumerate(request.references)
            ]
            form = {k: v if isinstance(v, str) else str(v) for k, v in fields.items()}
            body = self._post(self.edits_url, data=form, files=files)
        return self._image(body, self.edits_url if request.is_edit else self.generations_url)

    def _image(self, body: dict[str, Any], url: str) -> np.ndarray:
        """The first image of a response: `b64_json`, else fetched from `url`."""
        data = body.get("data")
        entry = data[0] if isinstance(data, list) and data else None
        if not isinstance(entry, dict):
            raise EngineHTTPError(url, 200, "response has no data[0]", 1)
        if entry.get("b64_json"):
            raw = base64.b64decode(entry["b64_json"])
        elif entry.get("url"):
            response = self._session().get(entry["url"], timeout=self.timeout_s)
            if response.status_code != 200:
                raise EngineHTTPError(entry["url"], response.status_code, "image download", 1)
            raw = response.content
        else:
            raise EngineHTTPError(url, 200, "data[0] has neither b64_json nor url", 1)
        try:
            with Image.open(io.BytesIO(raw)) as image:
                return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise EngineHTTPError(url, 200, f"the image is not readable ({exc})", 1) from None

"""Any diffusers pipeline behind the `ImageGenerator` interface: FLUX.2-klein, Qwen-Image-Edit,
FLUX.1-Kontext, Stable Diffusion (edits through its img2img counterpart), by hub id or path.

The pipeline is loaded once; each call groups requests into batches the pipeline can run in
one call, seeds every image with its own `torch.Generator`, and returns uint8 `[H, W, 3]`
arrays in request order. Anything the wrapper cannot do faithfully raises instead.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from itk_rl.formats.dtypes import torch_dtype
from itk_rl.formats.images import check_image
from itk_rl.interfaces.generator import RenderRequest

EditMode = Literal["auto", "reference", "img2img", "none"]

# How a pipeline reads `image=` in a batched call (diffusers 0.42). FLUX.2 treats the list as
# the references of *every* prompt, so only edits with identical references may share a call.
_SHARED_REFERENCES = frozenset({"Flux2Pipeline", "Flux2KleinPipeline"})
# These take one image per prompt, so edits with different references (of one size) batch.
# img2img pipelines behave the same way. Other reference pipelines run one edit per call.
_ONE_REFERENCE_PER_PROMPT = frozenset({"FluxKontextPipeline", "QwenImageEditPipeline"})

# Set by the generator itself (from its own arguments or the request), never by call_kwargs.
_RESERVED = frozenset(
    {"prompt", "image", "generator", "height", "width", "num_inference_steps", "guidance_scale"}
    | {"strength", "output_type", "return_dict", "num_images_per_prompt"}
)

# A Hugging Face hub id: "name" or "owner/name". Anything else must be an existing path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class DiffusersGenerator:
    """Renders `RenderRequest`s with a diffusers pipeline; implements `ImageGenerator`.

    Reference settings for FLUX.2-klein (InterleaveThinker): `height=width=1024`,
    `num_inference_steps=4`, `guidance_scale=1.0` (the defaults here). The tiny test Klein also
    needs `call_kwargs=TINY_KLEIN_CALL_KWARGS` and references of at least 64 px.

    Edit modes (how a request with `references` is rendered):
      - "reference": the loaded pipeline is called with `image=` (FLUX.2-klein with one or more
        references, FLUX.1-Kontext and Qwen-Image-Edit with one).
      - "img2img": `AutoPipelineForImage2Image.from_pipe(pipeline)` (shares the weights) is
        called with the one reference as init image and `strength` (Stable Diffusion, FLUX.1,
        Qwen-Image).
      - "none": edits raise.
      - "auto": "reference" if the pipeline's `__call__` takes `image` but not `strength` (an
        edit pipeline); else "img2img" if diffusers knows an image-to-image counterpart of the
        pipeline's family; else "none".
    Text-to-image works on pipelines whose `__call__` takes no `image`, and on those diffusers
    lists as text-to-image (Klein, Kontext); edit-only pipelines (Qwen-Image-Edit) raise.

    Batching: text-to-image requests batch together; edits batch when the pipeline can take
    their references in one call (identical references for FLUX.2, one same-sized reference
    per prompt for Kontext, Qwen-Image-Edit and img2img; otherwise one edit per call); at most
    `max_batch_size` images per call. Each image has its own generator seeded with
    `request.seed`, so it does not depend on what else is in its batch. Generators live on the
    CPU (diffusers' advice): the initial noise is the same on any device.

    Output size: `height` × `width` wherever the called pipeline takes a size; img2img
    pipelines that take none (Stable Diffusion) keep the reference's size.

    Args:
        model: hub id ("black-forest-labs/FLUX.2-klein-4B") or path of a saved pipeline.
        device: "cpu", "cuda", "cuda:N" (or "mps").
        dtype: "float32", "bfloat16" or "float16".
        height, width: output size in pixels.
        num_inference_steps, guidance_scale: passed to every call.
        max_batch_size: most images rendered in one pipeline call.
        call_kwargs: extra keyword arguments for every call (must be `__call__` arguments).
        edit_mode: see above.
        strength: img2img only: how far from the reference the edit may go (0, 1].
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        height: int = 1024,
        width: int = 1024,
        num_inference_steps: int = 4,
        guidance_scale: float = 1.0,
        max_batch_size: int = 4,
        call_kwargs: dict[str, Any] | None = None,
        edit_mode: EditMode = "auto",
        strength: float = 0.8,
    ) -> None:
        for name, value in (
            ("height", height),
            ("width", width),
            ("num_inference_steps", num_inference_steps),
            ("max_batch_size", max_batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if edit_mode not in ("auto", "reference", "img2img", "none"):
            raise ValueError(
                f"edit_mode must be 'auto', 'reference', 'img2img' or 'none', got {edit_mode!r}"
            )
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        self.model = str(model)
        self.torch_dtype = torch_dtype(dtype, "DiffusersGenerator dtype")
        self.device = _parse_device(device)
        self.height, self.width = height, width
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.max_batch_size = max_batch_size
        self.strength = strength

        self.pipe = _load(self.model, self.torch_dtype, self.device)
        self.pipe_class = type(self.pipe).__name__
        self.edit_mode, self.edit_pipe = self._resolve_edit_mode(edit_mode)
        self.text_to_image = _can_text_to_image(self.pipe)
        if self.edit_mode == "img2img" or self.pipe_class in _ONE_REFERENCE_PER_PROMPT:
            self.reference_style = "per_prompt"
        elif self.pipe_class in _SHARED_REFERENCES:
            self.reference_style = "shared"
        else:
            self.reference_style = "single"
        self.call_kwargs = self._check_call_kwargs(dict(call_kwargs or {}))

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        """One uint8 `[H, W, 3]` image per request, in order. Validates all before rendering."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(self._batch_key(index, request), []).append(index)
        images: dict[int, np.ndarray] = {}
        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch_size):
                chunk = indices[start : start + self.max_batch_size]
                rendered = self._render([requests[i] for i in chunk])
                images.update(zip(chunk, rendered, strict=True))
        return [images[i] for i in range(len(requests))]

    def _batch_key(self, index: int, request: RenderRequest) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call; raises what cannot render."""
        if not isinstance(request.prompt, str):
            raise TypeError(
                f"request {index}: prompt must be a string, got {type(request.prompt).__name__}"
            )
        if not request.is_edit:
            if not self.text_to_image:
                raise ValueError(
                    f"request {index} is text-to-image, but model {self.model!r} "
                    f"({self.pipe_class}) needs a reference image"
                )
            return ("text-to-image",)
        if self.edit_mode == "none":
            raise ValueError(
                f"request {index} is an edit, but model {self.model!r} ({self.pipe_class}) "
                "cannot edit (edit_mode resolved to 'none')"
            )
        refs = [
            check_image(ref, f"request {index} reference {j}")
            for j, ref in enumerate(request.references)
        ]
        if self.reference_style == "per_prompt":
            if len(refs) != 1:
                raise ValueError(
                    f"request {index} has {len(refs)} references, but model {self.model!r} "
                    f"({self.pipe_class}, edit_mode {self.edit_mode!r}) takes exactly one"
                )
            return ("per_prompt", refs[0].shape)
        if self.reference_style == "shared":
            digest = hashlib.sha256()
            for ref in refs:
                digest.update(repr(ref.shape).encode() + ref.tobytes())
            return ("shared", digest.hexdigest())
        return ("single", index)

    def _render(self, batch: list[RenderRequest]) -> list[np.ndarray]:
        """One pipeline call for requests that share a batch key."""
        edit = batch[0].is_edit
        pipe = self.edit_pipe if edit else self.pipe
        params = _call_parameters(pipe)
        kwargs: dict[str, Any] = {
            **self.call_kwargs,
            "prompt": [request.prompt for request in batch],
            "generator": [torch.Generator("cpu").manual_seed(r.seed) for r in batch],
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "output_type": "np",
        }
        if "height" in params and "width" in params:
            kwargs.update(height=self.height, width=self.width)
        if edit:
            kwargs["image"] = self._image_argument(batch)
            if self.edit_mode == "img2img":
                kwargs["strength"] = self.strength
        images = np.asarray(pipe(**kwargs).images)  # [batch, H, W, 3] floats in [0, 1]
        # Like diffusers' own numpy-to-PIL conversion.
        return list((np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8))

    def _image_argument(self, batch: list[RenderRequest]) -> Image.Image | list[Image.Image]:
        """`image=` for one call, in the form the pipeline reads (see `_SHARED_REFERENCES`)."""
        if self.reference_style == "per_prompt":
            return [Image.fromarray(request.references[0]) for request in batch]
        refs = [Image.fromarray(ref) for ref in batch[0].references]
        if self.reference_style == "shared":
            return refs  # identical for every request of the batch (its key)
        return refs[0] if len(refs) == 1 else refs

    def _resolve_edit_mode(self, edit_mode: EditMode) -> tuple[str, Any]:
        """The edit mode actually used and the pipeline that renders edits (None: no edits)."""
        params = _call_parameters(self.pipe)
        if edit_mode == "auto" and "image" in params and "strength" not in params:
            edit_mode = "reference"
        if edit_mode == "reference":
            if "image" not in params:
                raise ValueError(
                    f"edit_mode='reference' needs a pipeline whose __call__ takes `image`; "
                    f"model {self.model!r} loads {self.pipe_class}, which does not"
                )
            return edit_mode, self.pipe
        if edit_mode in ("auto", "img2img"):
            edit_pipe = _image_to_image_pipe(self.pipe)
            if edit_pipe is not None:
                edit_pipe.set_progress_bar_config(disable=True)
                return "img2img", edit_pipe
            if edit_mode == "img2img":
                raise ValueError(
                    f"edit_mode='img2img': diffusers has no image-to-image pipeline (one taking "
                    f"`strength`) for model {self.model!r} ({self.pipe_class})"
                )
        return "none", None

    def _check_call_kwargs(self, call_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Reject keys the generator sets itself or that a pipeline used here does not take."""
        pipes = [self.pipe]
        if self.edit_pipe is not None and self.edit_pipe is not self.pipe:
            pipes.append(self.edit_pipe)
        for key in call_kwargs:
            if key in _RESERVED:
                raise ValueError(
                    f"call_kwargs[{key!r}] is set by DiffusersGenerator (from its own arguments "
                    "or the request); remove it from call_kwargs"
                )
            for pipe in pipes:
                params = _call_parameters(pipe)
                takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
                if key not in params and not takes_any:
                    raise ValueError(
                        f"call_kwargs[{key!r}] is not an argument of "
                        f"{type(pipe).__name__}.__call__ (model {self.model!r})"
                    )
        return call_kwargs


def _parse_device(device: str) -> torch.device:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but CUDA is not available on this host")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}, but this host has {torch.cuda.device_count()} CUDA devices"
            )
    elif parsed.type not in ("cpu", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return parsed


def _load(model: str, dtype: torch.dtype, device: torch.device) -> Any:
    """Load the pipeline once, after cheap checks that name a wrong path."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"model path {model!r} is not a diffusers pipeline (no model_index.json)"
            )
    elif not _HUB_ID.fullmatch(model):
        raise FileNotFoundError(f"model path {model!r} does not exist")
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(str(path) if path.exists() else model, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"model {model!r} could not be loaded as a diffusers pipeline: {exc}"
        ) from exc
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call_parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def _image_to_image_pipe(pipe: Any) -> Any | None:
    """`AutoPipelineForImage2Image.from_pipe(pipe)` (same weights) if it takes `strength`."""
    from diffusers import AutoPipelineForImage2Image

    try:
        edit_pipe = AutoPipelineForImage2Image.from_pipe(pipe)
    except ValueError:  # diffusers maps no image-to-image pipeline to this family
        return None
    return edit_pipe if "strength" in _call_parameters(edit_pipe) else None


def _can_text_to_image(pipe: Any) -> bool:
    """Without an `image` argument it is text-to-image; with one, only if diffusers says so."""
    from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING

    if "image" not in _call_parameters(pipe):
        return True
    return type(pipe) in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values()

"""Images in records: validation, PNG files on disk, and `datasets.Image()` cells.

Images are `uint8` numpy arrays `[height, width, 3]` (RGB) everywhere in memory, PNG files or
PNG bytes when stored — never base64 inside JSON. Stored records refer to images by name
through an *image store*: `ImageFolder` (PNG files beside a JSON file) or `ImageList` (an
image column of a `datasets` row). Names are content hashes, so an image shared by several
records (the before-image of every attempt of a step) is stored once.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError


class RecordError(ValueError):
    """A stored record (JSON dict or dataset row) lacks a field or holds a wrong value."""


def require(data: Any, key: str, where: str) -> Any:
    """`data[key]`, or a RecordError naming the field and where it was expected."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected an object, got {type(data).__name__}")
    if key not in data:
        raise RecordError(f"{where}: missing field {key!r}")
    return data[key]


def check_image(image: Any, what: str) -> np.ndarray:
    """Return `image` if it is a uint8 `[H, W, 3]` array, else raise naming `what`."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(
            f"{what} must be a uint8 array of shape [H, W, 3], "
            f"got {image.dtype} {list(image.shape)}"
        )
    return image


def white_canvas(height: int, width: int) -> np.ndarray:
    """The critic's before-image for step 1 (nothing exists yet): `[height, width, 3]` white."""
    return np.full((height, width, 3), 255, dtype=np.uint8)


def read_image_file(path: str | os.PathLike[str], what: str = "image") -> np.ndarray:
    """Read an image file as RGB `[H, W, 3]` uint8; errors name the path."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {str(p)!r}")
    if not p.is_file():
        raise ValueError(f"{what} path is not a file: {str(p)!r}")
    try:
        with Image.open(p) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{what} file {str(p)!r} is not a readable image ({exc})") from exc


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a `[H, W, 3]` uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(check_image(image, "image")).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(value: Any, where: str) -> np.ndarray:
    """An image from what a store or a `datasets.Image()` cell holds.

    Accepts PNG/JPEG bytes, a PIL image (decoded cell), a `{"bytes", "path"}` dict (cell read
    with `decode=False`) or an array; raises RecordError naming `where` otherwise.
    """
    if isinstance(value, np.ndarray):
        return check_image(value, where)
    if isinstance(value, Image.Image):
        return np.asarray(value.convert("RGB"), dtype=np.uint8).copy()
    if isinstance(value, dict):
        if value.get("bytes"):
            return decode_image(value["bytes"], where)
        if value.get("path"):
            return read_image_file(value["path"], where)
        raise RecordError(f"{where}: image cell has neither bytes nor path")
    if isinstance(value, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(value)) as img:
                return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise RecordError(f"{where}: bytes are not a readable image ({exc})") from exc
    raise RecordError(f"{where}: expected an image, got {type(value).__name__}")


def _content_name(image: np.ndarray) -> str:
    digest = hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()
    return f"{digest[:20]}.png"


class ImageStore(Protocol):
    """Where a record's images go when it is stored: `put` returns the reference to keep."""

    def put(self, image: np.ndarray) -> str: ...

    def get(self, ref: Any, where: str) -> np.ndarray: ...


class ImageFolder:
    """PNG files in one folder; references are file names relative to it."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def put(self, image: np.ndarray) -> str:
        name = _content_name(check_image(image, "image"))
        path = self.folder / name
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(image))
        return name

    def get(self, ref: Any, where: str) -> np.ndarray:
        if not isinstance(ref, str) or not ref:
            raise RecordError(f"{where}: expected an image file name, got {ref!r}")
        rel = PurePosixPath(ref)
        if rel.is_absolute() or ".." in rel.parts:
            raise RecordError(f"{where}: image name {ref!r} must be relative to the image folder")
        return read_image_file(self.folder / rel, where)


class ImageList:
    """The images of one `datasets` row, in a list; references are indices as text."""

    def __init__(self, cells: list[Any] | None = None) -> None:
        self.cells: list[Any] = list(cells or [])
        self._index: dict[str, int] = {}

    def put(self, image: np.ndarray) -> str:
        name = _content_name(check_image(image, "image"))
        if name not in self._index:
            self._index[name] = len(self.cells)
            self.cells.append({"bytes": encode_png(image), "path": None})
        return str(self._index[name])

    def get(self, ref: Any, where: str) -> np.ndarray:
        if not (isinstance(ref, str) and ref.isdigit() and int(ref) < len(self.cells)):
            raise RecordError(
                f"{where}: image reference {ref!r} is not an index into {len(self.cells)} images"
            )
        return decode_image(self.cells[int(ref)], where)


def as_store(images: str | os.PathLike[str] | ImageStore) -> ImageStore:
    """A folder path becomes an `ImageFolder`; a store is used as is."""
    if isinstance(images, (str, os.PathLike)):
        return ImageFolder(images)
    return images

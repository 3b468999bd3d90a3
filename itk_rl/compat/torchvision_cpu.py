"""Let a CUDA torchvision wheel import beside a CPU-only torch.

transformers' Qwen-VL processors need a video processor, and every video processor needs
torchvision. The only torchvision wheel the package index has for torch 2.13 is a CUDA build:
its compiled `_C` extension cannot load next to CPU torch, and `import torchvision` then dies
in `_meta_registrations` with `operator torchvision::nms does not exist` (it registers fake
kernels for ops whose schemas the extension would have defined). That error surfaces as broken
`transformers`/`diffusers` imports, since both import torchvision when it is installed.

Defining the two op schemas (`nms`, `qnms`) ourselves before torchvision is imported is enough:
the pure-Python transforms (all that image and video processors use) work; the C++ ops
(`torchvision.ops.nms`, `roi_align`, ...) still raise, as they would without the extension.
`apply()` does this only when needed (torchvision installed, not yet imported, CPU torch, and its
extension fails to load), so it is a no-op on GPU hosts and on hosts with a matching wheel.
`apply_before_torchvision()` defers it to the moment something first looks torchvision up, so
importing itk_rl (its formats, for instance) does not import torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None


def _extension_loads(package_dir: Path) -> bool:
    """Try what torchvision's own `extension.py` does first: load its compiled `_C` ops."""
    import torch

    candidates = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, RuntimeError, ImportError):
        return False
    return True


def needed() -> bool:
    """True when importing torchvision would fail for want of the `torchvision::nms` schema."""
    if _library is not None or "torchvision" in sys.modules:
        return False
    import torch

    if torch.version.cuda is not None:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    return not _extension_loads(Path(spec.origin).parent)


def apply() -> bool:
    """Define the missing op schemas if needed; returns whether it did. Safe to call repeatedly."""
    global _library
    if not needed():
        return False
    import torch

    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _library.define(schema)
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `apply()` the first time anything looks torchvision up (an import, or
    transformers' `find_spec` availability check), then steps aside for the real finders."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torchvision":
            sys.meta_path.remove(self)
            apply()
        return None


def apply_before_torchvision() -> None:
    """`apply()` now if torchvision is already imported (then it is a no-op), else just before
    its first lookup; installed once per process."""
    if "torchvision" in sys.modules:
        apply()
    elif not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())

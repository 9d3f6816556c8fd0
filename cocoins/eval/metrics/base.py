"""What every metric backend shares: availability as (ok, reason), and the strict switch."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from cocoins.runtime import UserError

Availability = tuple[bool, str]
OK: Availability = (True, "")


class MetricUnavailable(UserError):
    """A metric's model is absent and `eval.strict: true` asked for an error instead of a null."""


def require(metric: str, availability: Availability, strict: bool) -> bool:
    """True when the metric can run; otherwise False (null + reason) or, if strict, MetricUnavailable."""
    ok, reason = availability
    if not ok and strict:
        raise MetricUnavailable(f"{metric} is unavailable: {reason} (eval.strict: true; set it to false to "
                                "record null with this reason instead)")
    return ok


def package_missing(module: str, install: str) -> str:
    """'' when `module` can be imported, else the reason naming the pip command (without importing it)."""
    if importlib.util.find_spec(module) is None:
        return f"the {module} package is not installed ({install})"
    return ""


def missing_files(root: str | Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if not (Path(root) / n).exists()]


def rgb_uint8(image: Image.Image) -> np.ndarray:
    """[H, W, 3] uint8 RGB array of a PIL image (any mode)."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))

"""CoCoIns: consistent subject generation via contrastive instantiated concepts.

    from cocoins import CoCoInsPipeline

The pipeline is imported on first use (PEP 562), so `import cocoins` loads neither torch nor diffusers.
"""

from __future__ import annotations

import importlib

_LAZY = {"CoCoInsPipeline": "cocoins.pipeline"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cocoins' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

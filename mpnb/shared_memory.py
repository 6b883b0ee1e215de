"""``multiprocessing.shared_memory``: ``SharedMemory`` and ``ShareableList``."""
from __future__ import annotations

import multiprocessing.shared_memory as _std
from multiprocessing.shared_memory import *  # noqa: F401,F403
from multiprocessing.shared_memory import __all__  # noqa: F401
from typing import Any


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std, name)

"""``multiprocessing.dummy``: the same API on threads (nothing is pickled)."""
from __future__ import annotations

import multiprocessing.dummy as _std
from multiprocessing.dummy import *  # noqa: F401,F403
from multiprocessing.dummy import __all__  # noqa: F401
from typing import Any


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std, name)

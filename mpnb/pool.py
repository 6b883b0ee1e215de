"""Process pools whose functions, arguments and results may be cell-defined."""
from __future__ import annotations

import multiprocessing.pool as _std
from multiprocessing.pool import ThreadPool  # noqa: F401 - re-exported
from typing import Any

__all__ = ["Pool", "ThreadPool"]


class Pool(_std.Pool):
    """``multiprocessing.pool.Pool`` on an mpnb context."""

    def __init__(self, processes: int | None = None, initializer: Any = None,
                 initargs: tuple[Any, ...] = (), maxtasksperchild: int | None = None,
                 context: Any = None) -> None:
        if context is None:
            from .context import _default_context
            context = _default_context.get_context()
        super().__init__(processes, initializer, initargs, maxtasksperchild, context)

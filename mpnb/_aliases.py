"""The standard library's ``multiprocessing`` submodules that mpnb does not wrap,
importable under mpnb's name: ``import mpnb.util`` is ``multiprocessing.util``,
``mpnb.shared_memory`` is ``multiprocessing.shared_memory``, ``mpnb.dummy`` (threads,
nothing pickled) is ``multiprocessing.dummy``.

A drop-in must answer ``from multiprocessing import util`` and
``import multiprocessing.resource_tracker`` after ``multiprocessing`` became ``mpnb``.
These modules carry no user objects (mpnb's pickler reaches them through
``reduction.ForkingPickler``), so the module itself is served, not a copy: state set
through either name is the same state. A meta path finder answers for these names
alone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

__all__ = ["STDLIB_SUBMODULES", "install"]

STDLIB_SUBMODULES = frozenset(
    {
        "reduction",
        "util",
        "spawn",
        "resource_tracker",
        "resource_sharer",
        "synchronize",
        "heap",
        "shared_memory",
        "dummy",
        "dummy.connection",
    }
    | (
        {"popen_spawn_win32"}
        if sys.platform == "win32"
        else {"popen_fork", "popen_forkserver", "popen_spawn_posix"}
    )
)
_PREFIX = "mpnb."


class _Loader(importlib.abc.Loader):
    def __init__(self) -> None:
        self._own_specs: dict[str, Any] = {}

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module("multiprocessing." + spec.name[len(_PREFIX) :])
        self._own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # The import system gave the module the alias's spec: it gets its own back.
        module.__spec__ = self._own_specs.pop(module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PREFIX) or fullname[len(_PREFIX) :] not in STDLIB_SUBMODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, _LOADER)


_LOADER = _Loader()
_FINDER = _Finder()


def install() -> None:
    """Serve the aliases (idempotent)."""
    if _FINDER not in sys.meta_path:
        # First: ``mpnb.dummy.connection`` must not be found again, as a copy, through
        # the package path of ``mpnb.dummy``.
        sys.meta_path.insert(0, _FINDER)

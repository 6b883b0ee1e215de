"""Run a function on a module right after it is first imported, without importing it.

A routed child changes IPython's display functions only if it uses them: ``after_import``
adds a finder in front of ``sys.meta_path`` that lets the usual finders find the module
and wraps its loader, so the function runs once the module has executed, before any
``from ... import`` of it sees its names. Nothing runs for other modules, and the finder
removes a name once its function ran.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["Hook", "after_import", "pending"]

#: What runs on the module.
Hook = Callable[[ModuleType], None]

_lock = threading.Lock()


class _Loader:
    """The module's own loader, and the hook to run once it executed the module."""

    def __init__(self, loader: Any, hook: Hook) -> None:
        self.loader, self.hook = loader, hook

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader  # the module sees its own loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        try:
            self.hook(module)
        except Exception:  # a hook never breaks the import
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _Finder:
    """In front of ``sys.meta_path``: finds nothing itself, wraps the loader of the
    modules it watches."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        hook = self.hooks.get(name)
        if hook is None:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        with _lock:
            self.hooks.pop(name, None)
        spec.loader = _Loader(spec.loader, hook)
        return spec


_finder = _Finder()


def after_import(name: str, hook: Hook) -> None:
    """Run ``hook(module)`` right after module ``name`` is first imported (at once if it
    is loaded already)."""
    module = sys.modules.get(name)
    if module is not None:
        hook(module)
        return
    with _lock:
        _finder.hooks[name] = hook
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def pending() -> list[str]:
    """The modules whose import is still awaited."""
    return sorted(_finder.hooks)

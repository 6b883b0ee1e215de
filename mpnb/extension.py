"""The IPython extension: what ``%load_ext mpnb`` turns on and ``%unload_ext`` off.

- mpnb's pickler in the kernel's standard library ``multiprocessing`` (so code
  written against ``multiprocessing`` and ``concurrent.futures.ProcessPoolExecutor``
  sends cell-defined objects by value);
- output routing: children's output in the cell that started them (``mpnb.output``;
  already on when mpnb was imported in a kernel), for the standard library's children
  too (``mpnb.output.stdlib``: its processes, ``Pool`` and ``ProcessPoolExecutor``);
- the magics (``mpnb.magics``); unloading stops the warm pool and every dashboard.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from . import _pickle

__all__ = ["load", "unload", "loaded"]

# Magics classes by module; a module that is absent is skipped.
_MAGICS = (
    ("mpnb.magics.dashboard", "MonitorMagics"),
    ("mpnb.magics.pool", "PoolMagics"),
    ("mpnb.magics.timeline", "TimelineMagics"),
)

_state: dict[str, Any] = {"loaded": False}


def _magics_classes() -> list[type]:
    classes = []
    for module_name, class_name in _MAGICS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        classes.append(getattr(module, class_name))
    return classes


def load(ipython: Any) -> None:
    if _state["loaded"]:
        return
    _pickle.install()
    from . import output

    if output.activate():
        from .output import stdlib

        stdlib.patch()
    for magics in _magics_classes():
        ipython.register_magics(magics)
    _state["loaded"] = True


def unload(ipython: Any) -> None:
    if not _state["loaded"]:
        return
    _state["loaded"] = False
    _pickle.uninstall()
    from .magics import warm

    warm.shutdown()
    stdlib_module = sys.modules.get("mpnb.output.stdlib")  # loaded only if routing was on
    if stdlib_module is not None:
        stdlib_module.unpatch()
    from . import output

    output.deactivate()
    sampler_module = sys.modules.get("mpnb.dashboard.sampler")  # loaded only if a dashboard ran
    if sampler_module is not None:
        sampler_module.stop_all()


def loaded() -> bool:
    return bool(_state["loaded"])

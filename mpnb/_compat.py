"""The one place where mpnb touches internals of cloudpickle, IPython and ipykernel.

mpnb needs a few things its dependencies do not offer as public API: cloudpickle's
rule for "importable, so send by reference", its class tracking (a class sent twice
comes back as one class), and the hooks of its pickler that build a function; IPython's
name for a cell's code (``Cell In[3]``); ipykernel's ``do_shutdown``. Each is reached
through a function here and nowhere else, and ``check()`` exercises every one of them:
``tests/test_compat.py`` calls it, so a release that renames or changes one fails that
test loudly instead of changing what users see (cloudpickle 3.1.3 renamed every code
object's file to ``<dynamic-code>`` and nothing said so; mpnb now carries the code
location itself, see ``_pickle.reducers.reduce_code``).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import cloudpickle  # no stubs, no py.typed: see pyproject's mypy overrides
import cloudpickle.cloudpickle as _cp

__all__ = [
    "PicklerBase",
    "PICKLER_DISPATCH",
    "FUNCTION_REDUCE_HOOK",
    "FUNCTION_NEWARGS_HOOK",
    "should_pickle_by_reference",
    "class_tracker_id",
    "lookup_class_or_track",
    "function_setstate",
    "cell_label",
    "running_cell_label",
    "kernel_of_app",
    "check",
]

# -- cloudpickle ----------------------------------------------------------------------------

#: The pickler mpnb extends: cloudpickle's by-value reducers for dynamic code.
PicklerBase = cloudpickle.Pickler
#: cloudpickle's reducers by type (code objects, cells, modules, methods...).
PICKLER_DISPATCH: dict[type, Callable[[Any], Any]] = cloudpickle.Pickler._dispatch_table
#: The pickler methods mpnb overrides to give functions of one notebook one globals dict
#: in each receiver: ``_dynamic_function_reduce(func)`` returns the 6-tuple of a reduce
#: (``make, newargs, state, listitems, dictitems, state_setter``) and
#: ``_function_getnewargs(func)`` the arguments of ``_make_function`` (code, globals, ...).
FUNCTION_REDUCE_HOOK = "_dynamic_function_reduce"
FUNCTION_NEWARGS_HOOK = "_function_getnewargs"


def should_pickle_by_reference(obj: Any) -> bool:
    """Whether cloudpickle would name ``obj`` (a function, class or module) rather
    than copy it: it can be imported where it is loaded."""
    return bool(_cp._should_pickle_by_reference(obj))


def class_tracker_id(cls: type) -> str:
    """The id under which receivers recognise ``cls`` when it is sent again."""
    return str(_cp._get_or_create_tracker_id(cls))


def lookup_class_or_track(tracker_id: str, cls: type) -> type:
    """In a receiver: the class already known under ``tracker_id``, else ``cls``."""
    return _cp._lookup_class_or_track(tracker_id, cls)


def function_setstate(func: types.FunctionType, state: tuple[Any, Any]) -> None:
    """cloudpickle's ``(attributes, slots)`` state setter of a rebuilt function."""
    _cp._function_setstate(func, state)


# -- IPython and ipykernel ------------------------------------------------------------------


def cell_label(shell: Any, filename: str) -> str | None:
    """``'Cell In[3]'`` when ``filename`` is the code of a cell of ``shell``, else ``None``
    (IPython's ``compile.format_code_name``, from IPython 8.7 on)."""
    try:
        found = shell.compile.format_code_name(filename)
    except Exception:  # an IPython surprise: use the plain form
        return None
    return f"{found[0]} {found[1]}" if found else None


def running_cell_label(filename: str) -> str | None:
    """``cell_label`` for the shell running in this process, if IPython is loaded (never
    imports it). The one helper behind both ``Cell In[n]`` relabellings: a pool task's
    ``RemoteTraceback`` (``errors``) and a child's printed traceback (``output``)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
    except Exception:
        return None
    return cell_label(shell, filename) if shell is not None else None


def kernel_of_app() -> Any:
    """The running ipykernel's kernel object (``None`` outside a kernel)."""
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    if kernelapp is None:
        return None
    try:
        app = kernelapp.IPKernelApp
        return getattr(app.instance(), "kernel", None) if app.initialized() else None
    except Exception:  # not a kernel we know
        return None


# -- the check --------------------------------------------------------------------------


def check() -> list[str]:
    """What no longer works as mpnb expects, one line each (empty: all is well).

    Exercises each internal above on real objects, not only its presence.
    """
    problems: list[str] = []

    def dynamic() -> int:  # a function cloudpickle must copy: defined in a function
        return 1

    try:
        if should_pickle_by_reference(dynamic):
            problems.append("cloudpickle: a nested function counts as importable")
        if not should_pickle_by_reference(check):
            problems.append("cloudpickle: an importable function counts as dynamic")
    except Exception as exc:
        problems.append(f"cloudpickle._should_pickle_by_reference: {exc!r}")
    try:
        cls = type("Probe", (), {})
        tid = class_tracker_id(cls)
        if lookup_class_or_track(tid, type("Probe", (), {})) is not cls:
            problems.append("cloudpickle: class tracking does not return the known class")
    except Exception as exc:
        problems.append(f"cloudpickle class tracking: {exc!r}")
    for hook in (FUNCTION_REDUCE_HOOK, FUNCTION_NEWARGS_HOOK):
        if not callable(getattr(PicklerBase, hook, None)):
            problems.append(f"cloudpickle.Pickler has no method {hook}")
    if types.CodeType not in PICKLER_DISPATCH:
        problems.append("cloudpickle.Pickler._dispatch_table has no code reducer")
    try:
        pickler = PicklerBase(__import__("io").BytesIO())
        reduced = getattr(pickler, FUNCTION_REDUCE_HOOK)(dynamic)
        if len(reduced) != 6:
            problems.append(
                f"cloudpickle: {FUNCTION_REDUCE_HOOK} returns {len(reduced)} items, not 6"
            )
        newargs = getattr(pickler, FUNCTION_NEWARGS_HOOK)(dynamic)
        if newargs[0] is not dynamic.__code__ or not isinstance(newargs[1], dict):
            problems.append(
                f"cloudpickle: {FUNCTION_NEWARGS_HOOK} no longer starts with (code, base_globals)"
            )
        state = reduced[2]
        func = types.FunctionType(dynamic.__code__, {})
        function_setstate(func, state)
        if func.__qualname__ != dynamic.__qualname__:
            problems.append("cloudpickle: _function_setstate did not set the state")
    except Exception as exc:
        problems.append(f"cloudpickle function hooks: {exc!r}")
    problems += _check_ipython()
    return problems


def _check_ipython() -> list[str]:
    try:
        from IPython.core.compilerop import CachingCompiler
    except ImportError:
        return []  # IPython is a dependency, but the core works without it
    problems = []
    try:
        compiler = CachingCompiler()
        filename = compiler.cache("x = 1\n", 7)
        shell = types.SimpleNamespace(compile=compiler)
        if cell_label(shell, filename) != "Cell In[7]":
            problems.append(
                f"IPython: a cached cell's file {filename!r} is not named "
                f"'Cell In[7]' but {cell_label(shell, filename)!r}"
            )
    except Exception as exc:
        problems.append(f"IPython CachingCompiler: {exc!r}")
    try:
        from ipykernel.kernelapp import IPKernelApp
        from ipykernel.kernelbase import Kernel

        if not callable(getattr(Kernel, "do_shutdown", None)):
            problems.append("ipykernel: Kernel has no do_shutdown to wrap")
        if not (
            callable(getattr(IPKernelApp, "initialized", None))
            and callable(getattr(IPKernelApp, "instance", None))
        ):
            problems.append("ipykernel: IPKernelApp is no longer a singleton")
    except ImportError as exc:
        problems.append(f"ipykernel: {exc}")
    return problems

"""The one place where mpnb touches internals of cloudpickle, IPython and ipykernel.

mpnb needs a few things its dependencies do not offer as public API: cloudpickle's
rule for "importable, so send by reference", its class tracking (a class sent twice
comes back as one class), and the hooks of its pickler that build a function; IPython's
name for a cell's code (``Cell In[3]``); ipykernel's ``do_shutdown``; IPython's display
functions, formatters and shell singleton (a routed child sends rich output). Each is reached
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
    "DISPLAY_MODULE",
    "DISPLAY_FUNCTIONS",
    "shell_display_formatter",
    "new_display_formatter",
    "add_formatter",
    "display_handle",
    "figure_formats_of",
    "detach_comms",
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


# -- IPython's display machinery -------------------------------------------------------------

#: The module that defines ``display`` and the functions it calls by their global names
#: (``publish_display_data``, ``clear_output``), re-exported by ``IPython.display``.
DISPLAY_MODULE = "IPython.core.display_functions"
DISPLAY_FUNCTIONS = ("display", "publish_display_data", "clear_output")
# matplotlib's format name of each MIME type IPython's inline figures use.
_FIGURE_FORMAT_OF = {"image/png": "png", "image/svg+xml": "svg", "image/jpeg": "jpeg"}


def shell_display_formatter() -> Any:
    """The ``DisplayFormatter`` of this process's IPython shell, if one exists (a child
    forked from the kernel has the kernel's); never imports IPython."""
    module = sys.modules.get("IPython.core.interactiveshell")
    if module is None:
        return None
    try:
        shell_class = module.InteractiveShell
        if not shell_class.initialized():
            return None
        return shell_class.instance().display_formatter
    except Exception:
        return None


def new_display_formatter() -> Any:
    """A fresh ``IPython.core.formatters.DisplayFormatter`` (no shell needed)."""
    from IPython.core.formatters import DisplayFormatter

    return DisplayFormatter()


def add_formatter(
    formatter: Any, mime: str, module: str, name: str, func: Callable[[Any], Any]
) -> None:
    """Format instances of ``module.name`` as ``mime`` with ``func``, without importing
    ``module`` (``BaseFormatter.for_type_by_name``)."""
    formatter.formatters[mime].for_type_by_name(module, name, func)


def display_handle(display_id: str) -> Any:
    """IPython's ``DisplayHandle`` for ``display_id``: its ``update`` and ``display``
    call ``display`` by its global name in ``DISPLAY_MODULE``."""
    module = __import__(DISPLAY_MODULE, fromlist=["DisplayHandle"])
    return module.DisplayHandle(display_id)


def figure_formats_of(shell: Any) -> list[str] | None:
    """The formats a shell's formatter shows matplotlib figures in (what
    ``set_matplotlib_formats`` or ``%config InlineBackend.figure_formats`` chose);
    ``None`` when none is registered. Imports nothing."""
    try:
        formatters = shell.display_formatter.formatters
    except Exception:
        return None
    found = []
    for mime, fmt in _FIGURE_FORMAT_OF.items():
        formatter = formatters.get(mime)
        if formatter is None:
            continue
        by_name = ("matplotlib.figure", "Figure") in getattr(formatter, "deferred_printers", {})
        by_type = any(
            getattr(cls, "__module__", "") == "matplotlib.figure" and cls.__name__ == "Figure"
            for cls in getattr(formatter, "type_printers", {})
        )
        if by_name or by_type:
            found.append(fmt)
    return found or None


def detach_comms() -> bool:
    """In a child forked from the kernel: comms (ipywidgets' models) made here go nowhere,
    as outside a kernel, instead of through the kernel's sockets it inherited (the
    ``comm`` package's ``create_comm``, which ipykernel replaces). Imports nothing;
    whether it changed anything."""
    module: Any = sys.modules.get("comm")
    if module is None or not hasattr(module, "DummyComm"):
        return False
    module.create_comm = module.DummyComm
    return True


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
    problems += _check_display()
    try:
        import comm

        if not (callable(getattr(comm, "create_comm", None)) and hasattr(comm, "DummyComm")):
            problems.append("comm: no create_comm to replace or no DummyComm")
    except ImportError:
        pass  # ipywidgets brings comm; without it no comm can be made
    return problems


def _check_display() -> list[str]:
    """IPython's display module as ``mpnb.output.display`` replaces and uses it."""
    import inspect

    problems = []
    try:
        module = __import__(DISPLAY_MODULE, fromlist=["display"])
        for name in DISPLAY_FUNCTIONS:
            if not callable(getattr(module, name, None)):
                problems.append(f"IPython: {DISPLAY_MODULE} has no {name}")
        # ``display`` must call the others by their global names, and update by ``display``.
        names = set(module.display.__code__.co_names)
        for name in ("publish_display_data", "clear_output"):
            if name not in names:
                problems.append(f"IPython: display no longer calls {name} by its global name")
        if "display" not in module.update_display.__code__.co_names:
            problems.append("IPython: update_display no longer calls display by its name")
        params = inspect.signature(module.display).parameters
        for param in ("include", "exclude", "metadata", "transient", "display_id", "raw"):
            if param not in params:
                problems.append(f"IPython: display has no parameter {param}")
        handle = display_handle("probe")
        if handle.display_id != "probe" or not callable(getattr(handle, "update", None)):
            problems.append("IPython: DisplayHandle changed")
        display_module = __import__("IPython.display", fromlist=["display"])
        if display_module.display is not module.display:
            problems.append(f"IPython.display.display is not the display of {DISPLAY_MODULE}")
    except Exception as exc:
        problems.append(f"IPython display functions: {exc!r}")
    try:
        from IPython.display import HTML

        formatter = new_display_formatter()
        data, _ = formatter.format(HTML("<b>x</b>"))
        if data.get("text/html") != "<b>x</b>" or "text/plain" not in data:
            problems.append(f"IPython: DisplayFormatter.format gave {sorted(data)}")
        probe_module = types.ModuleType("mpnb_probe_figure")
        probe = type("Figure", (), {"__module__": "mpnb_probe_figure"})
        probe_module.Figure = probe  # type: ignore[attr-defined]
        add_formatter(formatter, "image/png", "mpnb_probe_figure", "Figure", lambda f: b"png")
        sys.modules["mpnb_probe_figure"] = probe_module
        try:
            data, _ = formatter.format(probe())
        finally:
            del sys.modules["mpnb_probe_figure"]
        if data.get("image/png") != b"png":
            problems.append("IPython: a formatter added by name is not used")
    except Exception as exc:
        problems.append(f"IPython DisplayFormatter: {exc!r}")
    try:
        formatter = new_display_formatter()
        add_formatter(formatter, "image/svg+xml", "matplotlib.figure", "Figure", repr)
        shell = types.SimpleNamespace(display_formatter=formatter)
        if figure_formats_of(shell) != ["svg"]:
            problems.append("IPython: figure formatters registered by name are not found")
    except Exception as exc:
        problems.append(f"IPython figure formatters: {exc!r}")
    return problems

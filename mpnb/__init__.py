"""mpnb: ``multiprocessing`` as a first-class citizen of Jupyter notebooks.

``import mpnb as mp`` is a drop-in for ``import multiprocessing as mp``: every public
name of ``multiprocessing`` is here, taken from mpnb's default context as the standard
library takes its own. Functions, lambdas, closures and classes defined in notebook
cells cross process boundaries by value (cloudpickle); importable objects by reference.

``%load_ext mpnb`` loads the IPython extension (magics, output routing, and
cell-defined objects for code written against the standard library too).
Importing mpnb changes nothing global; in a kernel, what mpnb's children write shows
in the cell that started them (``mpnb.output``).
"""

import multiprocessing.util as _std_util
import sys as _sys
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from . import _aliases
from ._pickle import SerializationError as SerializationError
from ._pool import telemetry as _telemetry
from .context import _default_context
from .errors import InitializerError as InitializerError
from .errors import RemoteTraceback as RemoteTraceback
from .errors import TaskCancelledError as TaskCancelledError
from .errors import TaskSerializationError as TaskSerializationError
from .errors import WorkerCrashedError as WorkerCrashedError
from .sharedarray import shared_array as shared_array
from .sharedarray import shared_like as shared_like

__version__ = "0.1.0"

_context_names = [name for name in dir(_default_context) if not name.startswith("_")]
globals().update((name, getattr(_default_context, name)) for name in _context_names)

if _TYPE_CHECKING:
    # What the line above defines, spelled out for type checkers as typeshed spells out
    # ``multiprocessing``'s: the default context's bound methods (``mpnb.Queue`` too, as
    # at run time: annotate with ``mpnb.queues.Queue[int]``), and its classes.
    from multiprocessing import reduction as _reduction
    from multiprocessing.context import AuthenticationError as AuthenticationError
    from multiprocessing.context import BufferTooShort as BufferTooShort
    from multiprocessing.context import ProcessError as ProcessError
    from multiprocessing.context import TimeoutError as TimeoutError

    from .futures import ProcessPoolExecutor as ProcessPoolExecutor
    from .process import Process as Process

    reducer = _reduction
    Queue = _default_context.Queue
    JoinableQueue = _default_context.JoinableQueue
    SimpleQueue = _default_context.SimpleQueue
    RawValue = _default_context.RawValue
    RawArray = _default_context.RawArray
    Value = _default_context.Value
    Array = _default_context.Array
    Barrier = _default_context.Barrier
    BoundedSemaphore = _default_context.BoundedSemaphore
    Condition = _default_context.Condition
    Event = _default_context.Event
    Lock = _default_context.Lock
    RLock = _default_context.RLock
    Semaphore = _default_context.Semaphore
    Pipe = _default_context.Pipe
    Pool = _default_context.Pool
    Manager = _default_context.Manager
    active_children = _default_context.active_children
    allow_connection_pickling = _default_context.allow_connection_pickling
    cpu_count = _default_context.cpu_count
    current_process = _default_context.current_process
    freeze_support = _default_context.freeze_support
    get_logger = _default_context.get_logger
    log_to_stderr = _default_context.log_to_stderr
    parent_process = _default_context.parent_process
    set_executable = _default_context.set_executable
    set_forkserver_preload = _default_context.set_forkserver_preload
    get_all_start_methods = _default_context.get_all_start_methods
    get_start_method = _default_context.get_start_method
    set_start_method = _default_context.set_start_method
    get_context = _default_context.get_context


def _progress_bar(total: "int | None", label: str) -> _Any:
    """The bar of ``progress=True``: the notebook layer's (a widget in Jupyter, text
    elsewhere), imported when the first bar is drawn."""
    from .progress import ProgressBar

    return ProgressBar(total, label)


_telemetry.set_bar_factory(_progress_bar)

if "ipykernel" in _sys.modules:  # in a kernel: children's output goes to their cells
    from .output import activate as _activate_output

    _activate_output()

SUBDEBUG = _std_util.SUBDEBUG  # the same values as multiprocessing's
SUBWARNING = _std_util.SUBWARNING

__all__ = sorted(
    set(_context_names)
    | {
        "SUBDEBUG",
        "SUBWARNING",
        "SerializationError",
        "monitor",
        "WorkerCrashedError",
        "InitializerError",
        "TaskSerializationError",
        "TaskCancelledError",
        "RemoteTraceback",
        "ProcessPoolExecutor",
        "shared_array",
        "shared_like",
        "load_ipython_extension",
        "unload_ipython_extension",
    }
)


def monitor(*args: _Any, **kwargs: _Any) -> _Any:
    """Show the live process dashboard (see ``mpnb.dashboard.widget.monitor``)."""
    from .dashboard.widget import monitor as _monitor

    return _monitor(*args, **kwargs)


def load_ipython_extension(ipython: _Any) -> None:
    """``%load_ext mpnb``."""
    from .extension import load

    load(ipython)


def unload_ipython_extension(ipython: _Any) -> None:
    """``%unload_ext mpnb``."""
    from .extension import unload

    unload(ipython)


# Submodules of ``multiprocessing`` that mpnb does not wrap: the standard library's,
# as attributes (``mpnb.util``) and as modules (``import mpnb.util``).
_STDLIB_SUBMODULES = _aliases.STDLIB_SUBMODULES
_aliases.install()


# mpnb's own modules that ``import mpnb`` does not load (``mp.output.configure(...)``).
_LAZY_SUBMODULES = frozenset(
    {
        "output",
        "managers",
        "pool",
        "queues",
        "connection",
        "sharedctypes",
        "futures",
        "progress",
        "dashboard",
        "registry",
    }
)


def __getattr__(name: str) -> _Any:
    import importlib

    if name in _STDLIB_SUBMODULES:
        return importlib.import_module(f"multiprocessing.{name}")
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"mpnb.{name}")
    if name == "ProcessPoolExecutor":  # loaded on first use, as ``mpnb.pool``
        return importlib.import_module("mpnb.futures").ProcessPoolExecutor
    raise AttributeError(f"module 'mpnb' has no attribute {name!r}")

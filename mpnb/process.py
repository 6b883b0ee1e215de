"""Process classes: the standard library's, sent with mpnb's pickler.

Each concrete class (``SpawnProcess``, ``ForkServerProcess``, ``ForkProcess``) is the
standard library's with one mixin that:

- pickles the process object (class, target, args, kwargs) with mpnb's pickler, so
  cell-defined targets and ``Process`` subclasses defined in cells can be started,
  and an argument that cannot be sent fails in the parent, naming it;
- installs mpnb's pickler in the child and runs the start hooks' child set-up before
  ``run()`` (output routing, for instance); the parent's environ, cwd and ``sys.path``
  (``mpnb._world``) are applied first, as the process object is unpickled;
- records the process in ``registry.REGISTRY``;
- in a kernel, gives the child a process group of its own and a watch on the kernel
  (``mpnb._owner``: the kernel's interrupt reaches only the running cell's processes,
  and nothing outlives the kernel).
"""

from __future__ import annotations

import functools
import multiprocessing.context as _std_context
import multiprocessing.process as _std_process
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Protocol, SupportsIndex, cast

from . import _owner, _pickle, _routing, _world, shutdown
from .registry import REGISTRY, signal_name
from .timeline import record as timeline_record

__all__ = [
    "Process",
    "SpawnProcess",
    "ForkServerProcess",
    "ForkProcess",
    "add_start_hook",
    "remove_start_hook",
    "child_setups",
    "is_mpnb_process",
    "signal_name",
]

# Start hooks run in the parent just before a process starts; each may return a
# picklable callable that the child runs before the target (``None`` for nothing).
_start_hooks: list[Callable[[Any], Callable[[], None] | None]] = []
_hooks_lock = threading.Lock()


def add_start_hook(hook: Callable[[Any], Callable[[], None] | None]) -> None:
    """Call ``hook(process)`` before each mpnb process starts (idempotent)."""
    with _hooks_lock:
        if hook not in _start_hooks:
            _start_hooks.append(hook)


def remove_start_hook(hook: Callable[[Any], Callable[[], None] | None]) -> None:
    with _hooks_lock:
        if hook in _start_hooks:
            _start_hooks.remove(hook)


def child_setups(process: Any) -> list[Callable[[], None]]:
    """Run the start hooks for ``process``: what its child should run before its target."""
    with _hooks_lock:
        hooks = list(_start_hooks)
    setups = (hook(process) for hook in hooks)
    return [setup for setup in setups if setup is not None]


# Every mpnb child starts in the parent's environ, cwd and sys.path (``mpnb._world``).
add_start_hook(_world.setup_for)


class _ProcessInternals(Protocol):
    """The private attributes of ``multiprocessing.process.BaseProcess`` used here
    (typeshed leaves them out)."""

    _target: Callable[..., object] | None
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any]
    _popen: Any  # the start method's Popen object, None before start()
    _start_method: str | None

    def _check_closed(self) -> None: ...
    def _bootstrap(self, parent_sentinel: int | None = None) -> int: ...


class _ProcessClass(Protocol):
    """The private static methods of ``multiprocessing.context``'s process classes."""

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Any: ...
    @staticmethod
    def _after_fork() -> None: ...


def _internals(process: object) -> _ProcessInternals:
    return cast(_ProcessInternals, process)


if TYPE_CHECKING:
    if sys.platform != "win32":
        from multiprocessing import popen_spawn_posix

    # A mixin over a process class: to the type checker, a process.
    _ProcessBase = BaseProcess
else:
    _ProcessBase = object


def is_mpnb_process(process: object) -> bool:
    """Whether ``process`` is one of mpnb's (its ``start`` runs the start hooks itself)."""
    return isinstance(process, _MpnbProcess)


class _MpnbProcess(_ProcessBase):
    """Mixin over a standard library process class (see the module docstring)."""

    _mpnb_pool: str | None = None

    def start(self) -> None:
        shutdown.watch()  # this process stops its children when it exits
        self._mpnb_owner, detach = _owner.for_new_child()
        self._mpnb_detach = detach
        if detach:
            self._mpnb_cell = _owner.hook_kernel()
        self._mpnb_child_setups = child_setups(self)
        self._mpnb_method = self._effective_start_method()
        if self._mpnb_method == "fork":
            std = _internals(self)
            _pickle.remember_namespaces(std._target, std._args, std._kwargs)
        key = REGISTRY.add_process(self.name, self._mpnb_method, pool=self._mpnb_pool, handle=self)
        try:
            super().start()
        except BaseException:
            REGISTRY.discard_process(key)
            raise
        self._mpnb_key = key
        _owner.started(self, detach)
        popen = _internals(self)._popen
        if hasattr(popen, "when_pid"):  # mpnb's fork server: the pid comes when first read
            timeline_record.process_started(self, None)
            cast(_LazyPid, popen).when_pid(functools.partial(_pid_known, key, weakref.ref(self)))
        else:
            REGISTRY.update_process(key, pid=self.pid)
            timeline_record.process_started(self, self.pid)

    def _effective_start_method(self) -> str:
        method = _internals(self)._start_method
        if method:
            return method
        from .context import _default_context

        return _default_context.get_start_method()

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, tuple[Any, ...]]:
        setups: list[Callable[[], None]] = getattr(self, "_mpnb_child_setups", [])
        worlds = [s for s in setups if isinstance(s, _world.WorldSetup)]
        if not worlds:
            return _pickle.reduce_process(self)
        # The world first: unpickling it applies it, before the target is unpickled; the
        # process itself goes without it (applied once, not again at ``_bootstrap``).
        self._mpnb_child_setups = [s for s in setups if s not in worlds]
        try:
            make, args = _pickle.reduce_process(self)
        finally:
            self._mpnb_child_setups = setups
        return _rebuild_in_world, (worlds, make, args)

    def _bootstrap(self, *args: Any, **kwargs: Any) -> int:
        _owner.enter_child(getattr(self, "_mpnb_owner", None), getattr(self, "_mpnb_detach", False))
        _pickle.install()
        # As the standard library does for its own default: in the child, mpnb's
        # default start method is the one that started it.
        method = getattr(self, "_mpnb_method", None)
        if method is not None:
            from .context import _force_start_method

            _force_start_method(method)
        for setup in getattr(self, "_mpnb_child_setups", ()):
            setup()
        return _internals(super())._bootstrap(*args, **kwargs)

    def interrupt(self) -> None:
        """Send the process SIGINT: a ``KeyboardInterrupt`` in its Python code
        (Python 3.14's ``Process.interrupt``, on every supported Python)."""
        std = _internals(self)
        std._check_closed()
        popen = std._popen
        if popen is None:
            raise ValueError("cannot interrupt a process that was not started")
        if hasattr(popen, "interrupt"):
            popen.interrupt()
        elif popen.returncode is None:
            os.kill(popen.pid, signal.SIGINT)

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.exitcode is not None:
            _routing.drain(self)  # its output first, then what the caller does next

    @property
    def exitcode(self) -> int | None:
        code = super().exitcode
        key = getattr(self, "_mpnb_key", None)
        if code is not None and key is not None:
            REGISTRY.update_process(key, exitcode=code)
            timeline_record.process_ended(self, code)
        return code


class _LazyPid(Protocol):
    """A ``Popen`` whose pid comes after ``start`` (``mpnb.forkserver.Popen``)."""

    def when_pid(self, callback: Callable[[int], None]) -> None: ...


def _pid_known(key: int, process: weakref.ref[BaseProcess], pid: int) -> None:
    REGISTRY.update_process(key, pid=pid)
    alive = process()
    if alive is not None:
        timeline_record.process_pid(alive, pid)


def _rebuild_in_world(worlds: list[Any], make: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Unpickled after ``worlds`` were (and so applied): the process itself."""
    return make(*args)


class SpawnProcess(_MpnbProcess, _std_context.SpawnProcess):
    _start_method = "spawn"

    if sys.platform != "win32":

        @staticmethod
        def _Popen(process_obj: BaseProcess) -> popen_spawn_posix.Popen:
            return _SpawnPopen(process_obj)


if sys.platform != "win32":
    from multiprocessing import popen_spawn_posix

    class _SpawnPopen(popen_spawn_posix.Popen):
        """The standard library's spawn ``Popen``, passing each descriptor once.

        A pool worker's ``initargs`` are pickled apart from its process object
        (``_pool.initializer.Initializer``): shared ctypes in both (one heap arena) would list
        the arena's descriptor twice, which spawning refuses.
        """

        _fds: list[int]  # the standard library's, set in __init__

        def duplicate_for_child(self, fd: int) -> int:
            if fd not in self._fds:
                self._fds.append(fd)
            return fd


class ForkProcess(_MpnbProcess, _std_context.ForkProcess):
    _start_method = "fork"


if sys.platform != "win32":
    from . import forkserver

    class ForkServerProcess(_MpnbProcess, _std_context.ForkServerProcess):
        _start_method = "forkserver"

        # mpnb's fork server, not the standard library's (``mpnb.forkserver``).
        @staticmethod
        def _Popen(process_obj: BaseProcess) -> forkserver.Popen:  # type: ignore[override]
            return forkserver.Popen(process_obj)
else:  # pragma: no cover - Windows has no forkserver
    ForkServerProcess = None  # type: ignore[assignment,misc]


class Process(_MpnbProcess, BaseProcess):
    """``multiprocessing.Process`` on mpnb's default context."""

    _start_method = None

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Any:
        from .context import _default_context

        process_class = cast(_ProcessClass, _default_context.get_context().Process)
        return process_class._Popen(process_obj)

    @staticmethod
    def _after_fork() -> None:
        from .context import _default_context

        cast(_ProcessClass, _default_context.get_context().Process)._after_fork()


def __getattr__(name: str) -> Any:
    """Every other name of ``multiprocessing.process`` (``parent_process``,
    ``current_process``...): a drop-in has them all."""
    return getattr(_std_process, name)

"""Process classes: the standard library's, sent with mpnb's pickler.

Each concrete class (``SpawnProcess``, ``ForkServerProcess``, ``ForkProcess``) is the
standard library's with one mixin that:

- pickles the process object (class, target, args, kwargs) with mpnb's pickler, so
  cell-defined targets and ``Process`` subclasses defined in cells can be started,
  and an argument that cannot be sent fails in the parent, naming it;
- installs mpnb's pickler in the child and runs the start hooks' child set-up before
  ``run()`` (output routing, for instance);
- records the process in ``registry.REGISTRY``.
"""
from __future__ import annotations

import multiprocessing.context as _std_context
import os
import signal
import sys
import threading
from typing import Any, Callable

from . import _pickle, _routing
from .registry import REGISTRY, signal_name

__all__ = ["Process", "SpawnProcess", "ForkServerProcess", "ForkProcess",
           "add_start_hook", "remove_start_hook", "child_setups", "signal_name"]

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


class _MpnbProcess:
    """Mixin over a standard library process class (see the module docstring)."""

    _mpnb_pool: str | None = None

    def start(self) -> None:
        self._mpnb_child_setups = child_setups(self)
        self._mpnb_method = self._effective_start_method()
        if self._mpnb_method == "fork":
            _pickle.remember_namespaces(self._target, self._args, self._kwargs)
        key = REGISTRY.add_process(self.name, self._mpnb_method,
                                   pool=self._mpnb_pool, handle=self)
        try:
            super().start()  # type: ignore[misc]
        except BaseException:
            REGISTRY.discard_process(key)
            raise
        self._mpnb_key = key
        REGISTRY.update_process(key, pid=self.pid)

    def _effective_start_method(self) -> str:
        if self._start_method:
            return self._start_method
        from .context import _default_context
        return _default_context.get_start_method()

    def __reduce_ex__(self, protocol: int) -> tuple[Any, tuple[Any, ...]]:
        return _pickle.reduce_process(self)

    def _bootstrap(self, *args: Any, **kwargs: Any) -> int:
        _pickle.install()
        # As the standard library does for its own default: in the child, mpnb's
        # default start method is the one that started it.
        method = getattr(self, "_mpnb_method", None)
        if method is not None:
            from .context import _force_start_method
            _force_start_method(method)
        for setup in getattr(self, "_mpnb_child_setups", ()):
            setup()
        return super()._bootstrap(*args, **kwargs)  # type: ignore[misc]

    def interrupt(self) -> None:
        """Send the process SIGINT: a ``KeyboardInterrupt`` in its Python code
        (Python 3.14's ``Process.interrupt``, on every supported Python)."""
        self._check_closed()  # type: ignore[attr-defined]
        popen = self._popen  # type: ignore[attr-defined]
        if popen is None:
            raise ValueError("cannot interrupt a process that was not started")
        if hasattr(popen, "interrupt"):
            popen.interrupt()
        elif popen.returncode is None:
            os.kill(popen.pid, signal.SIGINT)

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)  # type: ignore[misc]
        if self.exitcode is not None:
            _routing.drain(self)  # its output first, then what the caller does next

    @property
    def exitcode(self) -> int | None:
        code = super().exitcode  # type: ignore[misc]
        key = getattr(self, "_mpnb_key", None)
        if code is not None and key is not None:
            REGISTRY.update_process(key, exitcode=code)
        return code


class SpawnProcess(_MpnbProcess, _std_context.SpawnProcess):
    _start_method = "spawn"

    if sys.platform != "win32":
        @staticmethod
        def _Popen(process_obj: Any) -> Any:
            return _SpawnPopen(process_obj)


if sys.platform != "win32":
    from multiprocessing import popen_spawn_posix

    class _SpawnPopen(popen_spawn_posix.Popen):
        """The standard library's spawn ``Popen``, passing each descriptor once.

        A pool worker's ``initargs`` are pickled apart from its process object
        (``_pool.worker.Initializer``): shared ctypes in both (one heap arena) would list
        the arena's descriptor twice, which spawning refuses.
        """

        def duplicate_for_child(self, fd: int) -> int:
            if fd not in self._fds:
                self._fds.append(fd)
            return fd


class ForkProcess(_MpnbProcess, _std_context.ForkProcess):
    _start_method = "fork"


if sys.platform != "win32":
    class ForkServerProcess(_MpnbProcess, _std_context.ForkServerProcess):
        _start_method = "forkserver"

        @staticmethod
        def _Popen(process_obj: Any) -> Any:
            from .context import prepare_forkserver
            prepare_forkserver()
            return _std_context.ForkServerProcess._Popen(process_obj)
else:  # pragma: no cover - Windows has no forkserver
    ForkServerProcess = None  # type: ignore[assignment,misc]


class Process(_MpnbProcess, _std_context.process.BaseProcess):
    """``multiprocessing.Process`` on mpnb's default context."""

    _start_method = None

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        from .context import _default_context
        return _default_context.get_context().Process._Popen(process_obj)

    @staticmethod
    def _after_fork() -> None:
        from .context import _default_context
        return _default_context.get_context().Process._after_fork()


def __getattr__(name: str) -> Any:
    """Every other name of ``multiprocessing.process`` (``parent_process``,
    ``current_process``...): a drop-in has them all."""
    return getattr(_std_context.process, name)

"""Contexts: one per start method, each a standard library context whose queues,
pipes, managers, pools and processes send cell-defined objects by value.

As in the standard library, a context has one small method per primitive that imports
its module lazily and passes the context along; only the primitives that carry user
objects differ (``Process``, ``Queue``, ``SimpleQueue``, ``JoinableQueue``, ``Pipe``,
``Manager``, ``Pool``). Locks, events, semaphores, barriers and shared ctypes are the
standard library's: nothing of the user's goes through them but their own state.

The default start method is ``forkserver`` on Linux (mpnb's own fork server,
``mpnb.forkserver``, with mpnb preloaded) and ``spawn`` elsewhere; ``fork`` is there on
request. It is mpnb's own setting: ``mpnb.set_start_method`` never changes the standard
library's.
"""

from __future__ import annotations

import multiprocessing.context as _std
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

from . import process

if TYPE_CHECKING:
    from .connection import Connection
    from .managers import SyncManager
    from .pool import Pool
    from .queues import BoundedSemaphore, JoinableQueue, Queue, SimpleQueue

__all__ = [
    "BaseContext",
    "SpawnContext",
    "ForkContext",
    "ForkServerContext",
    "DefaultContext",
]


class BaseContext(_std.BaseContext):
    """A standard library context whose primitives use mpnb's pickler."""

    _name: str
    # What each concrete context sets: its process class.
    Process: ClassVar[type[process._MpnbProcess]]

    def Manager(self) -> SyncManager:
        """A started ``SyncManager`` whose proxies accept cell-defined objects."""
        from .managers import SyncManager

        manager = SyncManager(ctx=self.get_context())
        manager.start()
        return manager

    def Pipe(self, duplex: bool = True) -> tuple[Connection, Connection]:
        """Two connections; ``send`` accepts cell-defined objects."""
        from .connection import Pipe

        return Pipe(duplex)

    def Queue(self, maxsize: int = 0) -> Queue[Any]:
        from .queues import Queue

        return Queue(maxsize, ctx=self.get_context())

    def JoinableQueue(self, maxsize: int = 0) -> JoinableQueue[Any]:
        from .queues import JoinableQueue

        return JoinableQueue(maxsize, ctx=self.get_context())

    def BoundedSemaphore(self, value: int = 1) -> BoundedSemaphore:
        """A bounded semaphore; a standard library queue made with this context (which
        makes one) sends cell-defined objects too (``mpnb.queues``)."""
        from .queues import BoundedSemaphore

        return BoundedSemaphore(value, ctx=self.get_context())

    def SimpleQueue(self) -> SimpleQueue[Any]:
        from .queues import SimpleQueue

        return SimpleQueue(ctx=self.get_context())

    # Not the standard library's return type: mpnb's Pool is a class of its own (with
    # the standard library's methods), not a subclass of ``multiprocessing.pool.Pool``.
    def Pool(  # type: ignore[override]
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        cluster: Any = None,
    ) -> Pool:
        from .pool import Pool

        return Pool(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            context=self.get_context(),
            cluster=cluster,
        )

    # Not the standard library's return types: mpnb's contexts subclass
    # ``multiprocessing.context.BaseContext``, not its SpawnContext, ForkContext...
    # (and, as there, ``get_context()`` of a concrete context is that context).
    @overload  # type: ignore[override]
    def get_context(self, method: None = None) -> BaseContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str) -> BaseContext: ...

    def get_context(self, method: str | None = None) -> BaseContext:
        if method is None:
            return self
        try:
            ctx = _concrete_contexts[method]
        except KeyError:
            raise ValueError(
                f"cannot find context for {method!r}: choose one of {sorted(_concrete_contexts)}"
            ) from None
        ctx._check_available()
        return ctx

    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool) -> str | None: ...

    def get_start_method(self, allow_none: bool = False) -> str | None:
        return self._name

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        raise ValueError("cannot set start method of concrete context")

    def get_all_start_methods(self) -> list[str]:
        return _default_context.get_all_start_methods()

    def set_forkserver_preload(self, module_names: list[str]) -> None:
        """The modules mpnb's fork server imports when it starts (``mpnb.forkserver``)."""
        from .forkserver import set_forkserver_preload

        set_forkserver_preload(module_names)

    def __repr__(self) -> str:
        return f"<mpnb context {self._name!r}>"


class SpawnContext(BaseContext):
    _name = "spawn"
    Process = process.SpawnProcess


class ForkContext(BaseContext):
    _name = "fork"
    Process = process.ForkProcess


_concrete_contexts: dict[str, BaseContext] = {"spawn": SpawnContext()}

if sys.platform != "win32":

    class ForkServerContext(BaseContext):
        _name = "forkserver"
        Process = process.ForkServerProcess

        def _check_available(self) -> None:
            from multiprocessing import reduction

            if not reduction.HAVE_SEND_HANDLE:
                raise ValueError("forkserver start method not available")

    _concrete_contexts["fork"] = ForkContext()
    _concrete_contexts["forkserver"] = ForkServerContext()
    _DEFAULT_METHOD = "forkserver" if sys.platform.startswith("linux") else "spawn"
else:  # pragma: no cover
    ForkServerContext = None  # type: ignore[assignment,misc]
    _DEFAULT_METHOD = "spawn"


class DefaultContext(BaseContext):
    """The context behind ``mpnb.Process``, ``mpnb.Pool``...; its method can be set."""

    Process = process.Process

    def __init__(self, context: BaseContext) -> None:
        self._default_context = context
        self._actual_context: BaseContext | None = None

    @overload  # type: ignore[override]  # as BaseContext.get_context above
    def get_context(self, method: None = None) -> BaseContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str) -> BaseContext: ...

    def get_context(self, method: str | None = None) -> BaseContext:
        if method is None:
            if self._actual_context is None:
                self._actual_context = self._default_context
            return self._actual_context
        return super().get_context(method)

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        if self._actual_context is not None and not force:
            raise RuntimeError(
                "context has already been set: pass force=True to change "
                "it, or use mpnb.get_context(method) for one object"
            )
        if method is None and force:
            self._actual_context = None
            return
        self._actual_context = self.get_context(method)

    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool) -> str | None: ...

    def get_start_method(self, allow_none: bool = False) -> str | None:
        if self._actual_context is None:
            if allow_none:
                return None
            self._actual_context = self._default_context
        return self._actual_context._name

    @property
    def _name(self) -> str:  # type: ignore[override]
        """The method in use, or that will be (reading it fixes nothing)."""
        return (self._actual_context or self._default_context)._name

    def get_all_start_methods(self) -> list[str]:
        """The available methods, the default first (as in the standard library)."""
        methods: list[str] = [m for m in ("forkserver", "spawn", "fork") if m in _concrete_contexts]
        methods.remove(_DEFAULT_METHOD)
        return [_DEFAULT_METHOD] + methods


_default_context = DefaultContext(_concrete_contexts[_DEFAULT_METHOD])


def _force_start_method(method: str) -> None:
    """Make ``method`` mpnb's default start method here (a child: its parent's choice)."""
    _default_context._actual_context = _concrete_contexts[method]

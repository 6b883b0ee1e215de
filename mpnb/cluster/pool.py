"""``Pool(cluster=...)``: the standard library's ``Pool`` API on a Dask cluster.

``ClusterPool`` is an ``mpnb.pool.Pool`` whose tasks run on the workers of a Dask
cluster (``engine.ClusterCore``) instead of local processes; ``mpnb.Pool(...,
cluster=...)`` makes one. ``cluster`` is a scheduler address, a ``distributed.Client``
(used, never closed) or ``"local"`` (a ``LocalCluster`` on loopback that the pool
starts, owns and closes: ``processes`` workers of one thread each). ``processes`` is
how many tasks run at once: by default the cluster's threads.

The API is ``Pool``'s: the map family with ``progress=True``, ``apply``, callbacks,
``close``/``terminate``/``join`` and the context manager. Cell-defined functions,
lambdas and classes travel by value with mpnb's pickler (and classes come back as
themselves); a large numpy array given as an argument or item is scattered to the
cluster once per call (once per pool, if it is read-only). What differs from a local
pool: ``imap`` reads its whole input at the call, ``maxtasksperchild`` has no effect
(Dask's workers are long-lived), and ``initializer`` runs once in each worker process,
before its first task of this pool.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from .. import _routing
from .._pickle import SHARED_ARRAY_MIN, checked_dumps, in_band
from .._pool.protocol import APPLY, MAP, STARMAP, Task
from .._pool.results import ApplyResult, Callback, IMapIterator, MapResult
from .._pool.tasks import chunked, map_chunksize
from .._pool.telemetry import Progress, func_name
from ..errors import short_repr
from ..pool import Pool, _timeline
from ..registry import REGISTRY
from ..timeline.render import Timeline
from .connect import Connection, connect
from .engine import RUN, TERMINATE, ClusterCore, Spec
from .remote import Shared

__all__ = ["ClusterPool"]

_It = TypeVar("_It", bound=IMapIterator)


class ClusterPool(Pool):
    """``mpnb.pool.Pool`` on a Dask cluster (see the module docstring)."""

    _engine: ClusterCore | None = None

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        cluster: Any,
    ) -> None:
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        init: bytes | None = None
        if initializer is not None:
            with in_band():
                init = bytes(checked_dumps((initializer, tuple(initargs)), "initializer"))
        self._init = init
        self._conn: Connection = connect(cluster, processes)
        try:
            threads = self._conn.threads()
            if processes is None:
                processes = max(threads, 1)
            self._processes = processes
            self._name = f"DaskPool-{next(_names)}"
            window = processes if processes < threads else None
            self._engine = ClusterCore(
                self._conn.client, window, self._name, owned=self._conn.cluster
            )
        except BaseException:
            self._conn.close()
            raise
        self._scattered: dict[int, tuple[weakref.ref[Any], Any]] = {}
        REGISTRY.add_pool(self._name, processes, "dask")
        from . import rows

        rows.track(self._conn.client, self._engine)

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` the pool submits through."""
        return self._conn.client

    def timeline(self, last_run: bool = False) -> Timeline:
        """Which worker process ran which task, when (see ``Pool.timeline``); a lane per
        Dask worker process, placed by the workers' wall clocks."""
        engine = self._engine
        return _timeline(engine.recorder if engine else None, self._name, last_run)

    # -- the standard library's API (the rest is ``Pool``'s, on the methods below) --

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] = {},  # noqa: B006 - the stdlib's signature
        callback: Callback | None = None,
        error_callback: Callback | None = None,
    ) -> ApplyResult:
        engine = self._check_running()
        with engine.interrupting():
            args, kwds = tuple(args), dict(kwds)
            func_bytes = self._func_bytes(func)
            shared: list[Any] = []
            local: dict[int, int] = {}
            data = (
                tuple(self._share(a, shared, local) for a in args),
                {k: self._share(v, shared, local) for k, v in kwds.items()},
            )
            with in_band():
                payload = bytes(checked_dumps(data, "args"))
            job = ApplyResult(self, callback, error_callback)
            name = func_name(func)
            what = f"{name}({', '.join(short_repr(a) for a in args)})"
            task = Task(job, 0, 0, b"", b"", APPLY, 0, 1, what, name)
            spec = Spec(
                job, task, func_bytes, payload, -1, tuple(shared), _routing.capture(), what, ""
            )
            engine.submit(job, [spec])
        return job

    def close(self) -> None:
        engine = self._engine
        if engine is not None and engine.state == RUN:
            engine.close()
            REGISTRY.update_pool(self._name, closed=True)

    def terminate(self) -> None:
        engine = self._engine
        if engine is None:
            return
        engine.terminate()
        REGISTRY.update_pool(self._name, closed=True)
        self._release()

    def join(self) -> None:
        engine = self._engine
        if engine is None:
            return
        if engine.state == RUN:
            raise ValueError("Pool is still running")
        with engine.interrupting():
            engine.join()
        self._release()

    def __enter__(self) -> ClusterPool:
        if self._state != RUN:
            raise ValueError("Pool not running")
        return self

    def __repr__(self) -> str:
        cls = type(self)
        return (
            f"<{cls.__module__}.{cls.__qualname__} state={self._state} "
            f"processes={getattr(self, '_processes', None)} cluster={self._conn.address!r}>"
        )

    def __del__(self, _warn: Any = None) -> None:
        # Like a local pool's: an unclosed pool is terminated. In a thread of its own:
        # the last reference may go in Dask's event loop, where a blocking call would hang.
        engine = self._engine
        if engine is not None and engine.state == RUN and not sys.is_finalizing():
            threading.Thread(target=_terminate_quietly, args=(self,), daemon=True).start()

    @property
    def _state(self) -> str:
        return self._engine.state if self._engine is not None else TERMINATE

    @property
    def _pool(self) -> list[BaseProcess]:
        return []

    # -- internals --

    def _release(self) -> None:
        """Let go of the scattered data; close what the pool owns."""
        scattered, self._scattered = self._scattered, {}
        if scattered and self._conn.client.status == "running":
            try:
                self._conn.client.cancel([f for _, f in scattered.values()])
            except Exception:
                pass
        self._conn.close()

    def _check_running(self) -> Any:
        engine = self._engine
        if engine is None:
            raise ValueError("Pool not running")
        engine.check()
        return engine

    def _func_bytes(self, func: Callable[..., Any]) -> bytes:
        if not callable(func):
            raise TypeError(f"func must be a callable, not {type(func).__name__}")
        with in_band():
            return bytes(checked_dumps((func, self._init), "func"))

    def _share(self, obj: Any, shared: list[Any], local: dict[int, int]) -> Any:
        """``obj``, or a ``Shared`` stand-in for a large numpy array scattered once."""
        nbytes = getattr(obj, "nbytes", 0)
        if type(obj).__name__ != "ndarray" or not isinstance(nbytes, int):
            return obj
        if nbytes < SHARED_ARRAY_MIN:
            return obj
        index = local.get(id(obj))
        if index is not None:
            return Shared(index)
        future = None
        readonly = not obj.flags.writeable
        if readonly:
            known = self._scattered.get(id(obj))
            if known is not None and known[0]() is obj:
                future = known[1]
        if future is None:
            future = self._conn.client.scatter(obj, hash=False, broadcast=False)
            if readonly:
                self._scattered[id(obj)] = (weakref.ref(obj), future)
        shared.append(future)
        local[id(obj)] = len(shared) - 1
        return Shared(len(shared) - 1)

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        mode: int,
        chunksize: int | None,
        callback: Callback | None = None,
        error_callback: Callback | None = None,
        on_progress: Progress | None = None,
    ) -> MapResult:
        engine = self._check_running()
        with engine.interrupting():
            items = iterable if isinstance(iterable, list) else list(iterable)
            chunksize = map_chunksize(len(items), self._processes, chunksize)
            func_bytes = self._func_bytes(func)
            job = MapResult(self, len(items), callback, error_callback, on_progress)
            if items:
                engine.submit(job, self._specs(job, func, func_bytes, mode, items, chunksize))
        return job

    def _imap(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int,
        kind: type[_It],
        mode: int = MAP,
        on_progress: Progress | None = None,
    ) -> _It:
        engine = self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        with engine.interrupting():
            items = list(iterable)
            func_bytes = self._func_bytes(func)
            it = kind(self, on_progress)
            it.set_length(len(items))
            if items:
                engine.submit(it, self._specs(it, func, func_bytes, mode, items, chunksize))
        return it

    def _specs(
        self,
        job: Any,
        func: Callable[..., Any],
        func_bytes: bytes,
        mode: int,
        items: list[Any],
        chunksize: int,
    ) -> list[Spec]:
        route = _routing.capture()
        name = func_name(func)
        star = 1 if mode == STARMAP else 0
        shared: list[Any] = []
        local: dict[int, int] = {}
        specs = []
        for start, chunk in chunked(items, chunksize):
            sent = [self._share(item, shared, local) for item in chunk]
            try:
                with in_band():
                    payload = bytes(checked_dumps(sent, "iterable"))
            except Exception:
                for offset, item in enumerate(chunk):
                    with in_band():
                        checked_dumps(item, f"iterable[{start + offset}]")
                raise
            first = short_repr(chunk[0])
            what = f"{name}({first})" if len(chunk) == 1 else f"{name}({first}, ...)"
            task = Task(job, 0, 0, b"", b"", mode, start, len(chunk), what, name)
            specs.append(
                Spec(job, task, func_bytes, payload, star, tuple(shared), route, what, first, chunk)
            )
        return specs


_names = iter(range(1, 1 << 62))


def _terminate_quietly(pool: ClusterPool) -> None:
    try:
        pool.terminate()
    except Exception:
        pass

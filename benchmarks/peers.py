"""One adapter per peer, so that a workload is written once for all of them.

A peer gives a pool as a context manager whose exit is the library's own natural exit
(``with Pool() as p`` terminates, ``with ProcessPoolExecutor() as ex`` waits, a reusable
executor or a dask cluster stays up for the next cell); ``shutdown()`` then tears down what
a reusable pool keeps. Each library is imported only when a case uses it, so every case
loads just its own peer.

Natural batching: each library's own default for ``map``: the stdlib API and mpire pick a
chunk size, joblib batches automatically, ``concurrent.futures`` and loky send one task
per item, dask maps a bag of ``min(len(items), 10 * workers)`` partitions.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Iterator
from typing import Any


class Unavailable(Exception):
    """The peer cannot run here; the message says why."""


class NotSupported(Exception):
    """The peer has no API for what the workload needs."""


def _is_timeout(exc: BaseException) -> bool:
    return type(exc).__name__ == "TimeoutError"


class _Result:
    """A pending result with ``result(timeout)`` raising the builtin ``TimeoutError``."""

    def __init__(self, get: Callable[[float | None], Any]) -> None:
        self._get = get

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._get(timeout)
        except Exception as exc:
            if _is_timeout(exc):
                raise TimeoutError(f"no result within {timeout} s") from exc
            raise


class Handle:
    """What a workload sees of an open pool."""

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Result:
        raise NotSupported("no single-task API")


class Peer:
    name = ""
    family = ""
    #: start method of its workers, where it has one
    start_method: str | None = None
    #: how it ships functions: pickle (by reference), cloudpickle or dill (by value)
    serializer = "pickle"
    #: has ``Process`` and ``Queue`` (the multiprocessing API)
    has_process = False
    #: has a single-task API (``apply_async``, ``submit``)
    has_submit = True

    def load(self) -> None:
        """Import the library; raises ``Unavailable``."""

    def version(self) -> str:
        return ""

    def label(self) -> str:
        return self.name

    def pool(self, n: int) -> contextlib.AbstractContextManager[Handle]:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Tear down whatever outlives a pool's ``with`` block."""

    def context(self) -> Any:
        """An object with ``Process`` and ``Queue``."""
        raise NotSupported("no Process/Queue API")


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise Unavailable(f"import failed: {type(exc).__name__}: {exc}") from exc


# -- the multiprocessing API: stdlib, multiprocess (dill), mpnb -------------------------


class _MpHandle(Handle):
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return self.pool.map(fn, items)

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Result:
        return _Result(self.pool.apply_async(fn, args).get)


class MpApiPeer(Peer):
    """A library with the multiprocessing API; ``method=None`` means its default."""

    has_process = True

    def __init__(self, module: str, method: str | None, family: str, serializer: str) -> None:
        self.module_name = module
        self.method = method
        self.family = family
        self.serializer = serializer
        short = {"multiprocessing": "mp"}.get(module, module)
        self.name = f"{short}:{method}" if method else short
        self._ctx: Any = None

    def load(self) -> None:
        module = _import(self.module_name)
        try:
            ctx = module.get_context(self.method) if self.method else module
            for attr in ("Pool", "Process", "Queue"):
                getattr(ctx, attr)
            self.start_method = (
                ctx.get_start_method() if hasattr(ctx, "get_start_method") else self.method
            )
        except Exception as exc:
            raise Unavailable(f"import failed: {type(exc).__name__}: {exc}") from exc
        self._ctx = ctx

    def version(self) -> str:
        module = importlib.import_module(self.module_name)
        return getattr(module, "__version__", "") or "stdlib"

    def label(self) -> str:
        if self.method is None and self.start_method:
            return f"{self.name} ({self.start_method})"
        return self.name

    @contextlib.contextmanager
    def pool(self, n: int) -> Iterator[Handle]:
        with self._ctx.Pool(n) as pool:
            yield _MpHandle(pool)

    def context(self) -> Any:
        return self._ctx


# -- concurrent.futures and loky --------------------------------------------------------


class _ExecutorHandle(Handle):
    def __init__(self, executor: Any) -> None:
        self.executor = executor

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self.executor.map(fn, items))

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Result:
        return _Result(self.executor.submit(fn, *args).result)


class FuturesPeer(Peer):
    family = "concurrent.futures"

    def __init__(self, method: str) -> None:
        self.method = self.start_method = method
        self.name = f"cf:{method}"

    def version(self) -> str:
        return "stdlib"

    @contextlib.contextmanager
    def pool(self, n: int) -> Iterator[Handle]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context(self.method)
        with ProcessPoolExecutor(n, mp_context=ctx) as executor:
            yield _ExecutorHandle(executor)


class LokyPeer(Peer):
    name = family = "loky"
    start_method = "loky"
    serializer = "cloudpickle"

    def __init__(self) -> None:
        self._executor: Any = None

    def load(self) -> None:
        _import("loky")

    def version(self) -> str:
        return importlib.import_module("loky").__version__

    @contextlib.contextmanager
    def pool(self, n: int) -> Iterator[Handle]:
        import loky

        self._executor = loky.get_reusable_executor(max_workers=n)
        yield _ExecutorHandle(self._executor)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


# -- joblib -----------------------------------------------------------------------------


class _JoblibHandle(Handle):
    def __init__(self, parallel: Any) -> None:
        self.parallel = parallel

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        from joblib import delayed

        return list(self.parallel(delayed(fn)(x) for x in items))


class JoblibPeer(Peer):
    name = family = "joblib"
    has_submit = False
    start_method = "loky"
    serializer = "cloudpickle"

    def __init__(self) -> None:
        self._executor: Any = None

    def load(self) -> None:
        _import("joblib")

    def version(self) -> str:
        return importlib.import_module("joblib").__version__

    @contextlib.contextmanager
    def pool(self, n: int) -> Iterator[Handle]:
        from joblib import Parallel

        with Parallel(n_jobs=n) as parallel:
            # joblib keeps its loky executor for the next Parallel call; hold on to it
            # so shutdown() can stop it.
            self._executor = getattr(parallel._backend, "_workers", None)
            yield _JoblibHandle(parallel)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


# -- mpire ------------------------------------------------------------------------------


class _MpireHandle(Handle):
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        if items and isinstance(items[0], (tuple, dict)):
            # mpire unpacks tuples and dicts into arguments; keep each item whole.
            items = [(x,) for x in items]
        return self.pool.map(fn, items, iterable_len=len(items))

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Result:
        return _Result(self.pool.apply_async(fn, args=args).get)


class MpirePeer(Peer):
    family = "mpire"

    def __init__(self, method: str = "fork") -> None:
        self.method = self.start_method = method
        self.name = f"mpire:{method}"

    def load(self) -> None:
        _import("mpire")

    def version(self) -> str:
        from importlib.metadata import version

        return version("mpire")

    @contextlib.contextmanager
    def pool(self, n: int) -> Iterator[Handle]:
        from mpire import WorkerPool

        # keep_alive: the same workers across map calls, as every other warm pool here.
        with WorkerPool(n_jobs=n, start_method=self.method, keep_alive=True) as pool:
            yield _MpireHandle(pool)


# -- dask.distributed -------------------------------------------------------------------


class _DaskHandle(Handle):
    def __init__(self, client: Any, workers: int) -> None:
        self.client = client
        self.workers = workers

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        import dask.bag

        parts = max(1, min(len(items), 10 * self.workers))
        bag = dask.bag.from_sequence(items, npartitions=parts)
        return bag.map(fn).compute(scheduler=self.client)

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Result:
        return _Result(self.client.submit(fn, *args, pure=False).result)


class DaskPeer(Peer):
    name = family = "dask"
    start_method = "spawn"
    serializer = "cloudpickle"

    def __init__(self) -> None:
        self._cluster: Any = None
        self._client: Any = None
        self._workers = 0

    def load(self) -> None:
        _import("distributed")
        _import("dask.bag")

    def version(self) -> str:
        return importlib.import_module("distributed").__version__

    def _connect(self, n: int) -> None:
        """A ``LocalCluster`` of ``n`` one-thread workers and its client."""
        from distributed import Client, LocalCluster

        # Loopback only: scheduler, workers, nannies and the dashboard.
        self._cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
        self._client = Client(self._cluster)

    def _handle(self, n: int) -> Handle:
        return _DaskHandle(self._client, n)

    @contextlib.contextmanager
    def pool(self, n: int) -> Iterator[Handle]:
        if self._client is None or self._workers != n:
            self.shutdown()
            self._connect(n)
            self._workers = n
        yield self._handle(n)

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.close()
            self._cluster.close()
            self._client = self._cluster = None


# -- pools on a Dask cluster (W13) -------------------------------------------------------


def _local_cluster(n: int) -> Any:
    from distributed import LocalCluster

    # Loopback only, no dashboard; as mpnb's Pool(cluster="local") makes it.
    return LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )


class _RawDaskHandle(Handle):
    def __init__(self, client: Any) -> None:
        self.client = client

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self.client.gather(self.client.map(fn, items, pure=False)))

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Result:
        return _Result(self.client.submit(fn, *args, pure=False).result)


class RawDaskPeer(DaskPeer):
    """``Client.map``/``gather`` and ``Client.submit`` on a ``LocalCluster``: what
    mpnb's ``Pool(cluster=...)`` is measured against (one task per item, not pure)."""

    name = family = "dask:raw"

    def load(self) -> None:
        _import("distributed")

    def _connect(self, n: int) -> None:
        from distributed import Client

        self._cluster = _local_cluster(n)
        self._client = Client(self._cluster, set_as_default=False)

    def _handle(self, n: int) -> Handle:
        return _RawDaskHandle(self._client)


class MpnbDaskPeer(RawDaskPeer):
    """mpnb's ``Pool(cluster=client)`` on the same kind of ``LocalCluster``."""

    name = "mpnb:dask"
    family = "mpnb"
    serializer = "cloudpickle where needed"

    def load(self) -> None:
        super().load()
        _import("mpnb")

    @contextlib.contextmanager
    def pool(self, n: int) -> Iterator[Handle]:
        with super().pool(n):
            import mpnb

            with mpnb.Pool(cluster=self._client) as pool:
                yield _MpHandle(pool)


# -- serial baseline --------------------------------------------------------------------


class _SerialHandle(Handle):
    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(map(fn, items))

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Result:
        value = fn(*args)
        return _Result(lambda timeout: value)


class SerialPeer(Peer):
    name = family = "serial"

    def version(self) -> str:
        return "in-process"

    @contextlib.contextmanager
    def pool(self, n: int) -> Iterator[Handle]:
        yield _SerialHandle()


# -- the registry -----------------------------------------------------------------------

_FACTORIES: dict[str, Callable[[], Peer]] = {
    "mpnb": lambda: MpApiPeer("mpnb", None, "mpnb", "cloudpickle where needed"),
    "mpnb:spawn": lambda: MpApiPeer("mpnb", "spawn", "mpnb", "cloudpickle where needed"),
    "serial": SerialPeer,
    "mp:fork": lambda: MpApiPeer("multiprocessing", "fork", "stdlib", "pickle"),
    "mp:forkserver": lambda: MpApiPeer("multiprocessing", "forkserver", "stdlib", "pickle"),
    "mp:spawn": lambda: MpApiPeer("multiprocessing", "spawn", "stdlib", "pickle"),
    "cf:forkserver": lambda: FuturesPeer("forkserver"),
    "cf:spawn": lambda: FuturesPeer("spawn"),
    "loky": LokyPeer,
    "joblib": JoblibPeer,
    "multiprocess:fork": lambda: MpApiPeer("multiprocess", "fork", "multiprocess", "dill"),
    "multiprocess:spawn": lambda: MpApiPeer("multiprocess", "spawn", "multiprocess", "dill"),
    "mpire:fork": MpirePeer,
    "dask": DaskPeer,
    "dask:raw": RawDaskPeer,
    "mpnb:dask": MpnbDaskPeer,
}

ALL = tuple(_FACTORIES)
MPNB = ("mpnb", "mpnb:spawn")
#: the pools on a Dask cluster (W13 only)
CLUSTER = ("mpnb:dask", "dask:raw")
#: every peer with a pool
POOLS = tuple(p for p in ALL if p not in ("serial", "multiprocess:spawn") + CLUSTER)
#: the peers with Process and Queue
PROCESS_API = (
    "mpnb",
    "mpnb:spawn",
    "mp:fork",
    "mp:forkserver",
    "mp:spawn",
    "multiprocess:fork",
    "multiprocess:spawn",
)


def get(name: str) -> Peer:
    return _FACTORIES[name]()


def start_method(name: str) -> str | None:
    """The start method a peer's name says, without importing anything."""
    if ":" in name:
        return name.split(":", 1)[1]
    return {
        "mpire:fork": "fork",
        "dask": "spawn",
        "dask:raw": "spawn",
        "mpnb:dask": "spawn",
        "loky": "loky",
        "joblib": "loky",
    }.get(name)

"""The warm pool: one ``mpnb.Pool`` that lives across cells, behind the magics.

One locked singleton that is created on first use and recreated when asked for another
size or start method; ``shutdown`` ends it (the extension calls it on unload). Its
workers live long: ``world_sync`` brings them the notebook's world before each run.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .._world import Sync, Tracker

__all__ = ["get_pool", "world_sync", "shutdown", "restart", "describe"]

_lock = threading.RLock()
_state: dict[str, Any] = {
    "pool": None,
    "processes": None,
    "method": None,
    "world": None,
    "cluster": None,
}


def _default_processes() -> int:
    return os.cpu_count() or 1


def get_pool(
    processes: int | None = None, start_method: str | None = None, cluster: str | None = None
) -> Any:
    """The warm pool with ``processes`` workers (default: the current size, else one per
    core) under ``start_method`` (default: the current one, else mpnb's default); with
    ``cluster`` (a Dask scheduler address or ``"local"``), or once moved there, a pool on
    that cluster (``"here"`` moves it back to this machine)."""
    from ..context import _default_context

    with _lock:
        pool = _state["pool"]
        want_cluster = _state["cluster"] if cluster is None else cluster
        if want_cluster == "here":
            want_cluster = None
        want_n = processes or _state["processes"] or _default_processes()
        want_method = start_method or _state["method"] or _default_context.get_start_method()
        if pool is not None and (
            want_n != _state["processes"]
            or want_method != _state["method"]
            or want_cluster != _state["cluster"]
        ):
            _close(pool)
            pool = None
        if pool is None:
            ctx = _default_context.get_context(want_method)
            world = Tracker()  # before the workers start: they start in this world
            pool = ctx.Pool(want_n, cluster=want_cluster)
            _state.update(
                pool=pool, processes=want_n, method=want_method, world=world, cluster=want_cluster
            )
        return pool


def world_sync() -> Sync:
    """What the warm pool's workers apply before this run: the notebook's environ, cwd
    and ``sys.path`` changes since they started, and its user modules' stamps."""
    with _lock:
        world = _state["world"]
        if world is None:
            world = _state["world"] = Tracker()
        sync: Sync = world.sync()
        return sync


def _close(pool: Any) -> None:
    pool.terminate()
    pool.join()


def shutdown() -> None:
    """Stop the warm pool's workers (a later ``get_pool`` starts a new one)."""
    with _lock:
        pool = _state["pool"]
        _state.update(pool=None)
        if pool is not None:
            _close(pool)


def restart() -> Any:
    """Replace the warm pool by a fresh one of the same size and start method."""
    with _lock:
        processes, method = _state["processes"], _state["method"]
        shutdown()
        return get_pool(processes, method, _state["cluster"])


def describe() -> dict[str, Any]:
    """Size, start method and workers (pid, alive) of the warm pool."""
    with _lock:
        pool = _state["pool"]
        if pool is None:
            return {
                "running": False,
                "processes": _state["processes"],
                "start_method": _state["method"],
                "cluster": _state["cluster"],
                "workers": [],
            }
        workers = [
            {"name": w.name, "pid": w.pid, "alive": w.is_alive()}
            for w in getattr(pool, "_pool", [])
        ]
        return {
            "running": True,
            "processes": _state["processes"],
            "start_method": _state["method"],
            "cluster": _state["cluster"],
            "workers": workers,
        }

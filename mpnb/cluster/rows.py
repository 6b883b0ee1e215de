"""The monitor's rows for Dask workers: one per worker of each cluster a pool uses.

``track(client)`` is called by each cluster pool; ``rows()`` (asked by the dashboard
through ``mpnb.dashboard.cluster_rows``) reads ``Client.scheduler_info()`` of each
live client, at most every ``INTERVAL`` seconds, and returns plain dicts: address,
threads, CPU % and memory (from the workers' heartbeats), and the tasks of mpnb's
pools running there and done there.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from ..dashboard import cluster_rows

__all__ = ["track", "rows", "INTERVAL"]

# Seconds between two reads of a scheduler's worker list.
INTERVAL = 1.0

_clients: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_cache: tuple[float, list[dict[str, Any]]] = (0.0, [])


_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def track(client: Any, engine: Any = None) -> None:
    """Show ``client``'s workers in the monitor while it is open, with the counts of
    ``engine`` (an ``engine.ClusterCore``: its ``per_worker`` tasks running and done)."""
    with _lock:
        _clients.add(client)
        if engine is not None:
            _engines.add(engine)
    cluster_rows.set_provider(rows)


def _counts() -> dict[str, list[int]]:
    total: dict[str, list[int]] = {}
    for engine in list(_engines):
        for address, (running, done) in list(engine.per_worker.items()):
            counts = total.setdefault(address, [0, 0])
            counts[0] += running
            counts[1] += done
    return total


def rows() -> list[dict[str, Any]]:
    """The workers of every tracked cluster (cached ``INTERVAL`` seconds)."""
    global _cache
    now = time.monotonic()
    with _lock:
        if now - _cache[0] < INTERVAL:
            return list(_cache[1])
        clients = [c for c in _clients if getattr(c, "status", "") == "running"]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    counts = _counts()
    for client in clients:
        try:
            info = client.scheduler_info(n_workers=-1)
        except TypeError:  # older distributed: every worker, no argument
            info = client.scheduler_info()
        except Exception:
            continue
        for address, worker in sorted((info.get("workers") or {}).items()):
            if address in seen:
                continue
            seen.add(address)
            metrics = worker.get("metrics") or {}
            out.append(
                {
                    "address": address,
                    "threads": int(worker.get("nthreads") or 0),
                    "cpu": float(metrics.get("cpu") or 0.0),
                    "memory": int(metrics.get("memory") or 0),
                    "running": counts.get(address, [0, 0])[0],
                    "done": counts.get(address, [0, 0])[1],
                    "scheduler": str(getattr(client.scheduler, "address", "")),
                }
            )
    with _lock:
        _cache = (now, out)
    return list(out)

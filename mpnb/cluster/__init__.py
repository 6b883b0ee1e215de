"""Pools on a Dask cluster: ``mpnb.Pool(cluster=...)``, ``ProcessPoolExecutor(cluster=...)``.

The same API as a local pool, with its tasks on the workers of a Dask cluster (a
scheduler address, a ``distributed.Client``, or ``"local"``). Needs the ``dask``
extra (``pip install "mpnb[dask]"``); nothing else in mpnb imports Dask. By module:

- ``pool``: ``ClusterPool``, the ``Pool`` API; ``executor``: the executor on it;
- ``engine``: the client side (futures, results, crashes, interrupts);
- ``remote``: the worker side (runs a task, sends its output as Dask events);
- ``publish``: a task's output in the cell that submitted it;
- ``plugin``: the scheduler plugin that stops Dask's retries of mpnb's tasks;
- ``connect``: what ``cluster=`` names; ``rows``: the cluster's workers for the monitor;
- ``worker_setup``: preloaded in the workers of ``cluster="local"`` (no SIGINT).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DaskMissingError", "require_dask", "pool_class", "executor_class"]

INSTALL_HINT = 'pip install "mpnb[dask]"'


class DaskMissingError(ImportError):
    """``cluster=`` was given but ``dask``/``distributed`` cannot be imported."""


def require_dask() -> None:
    """Raise ``DaskMissingError`` (an ``ImportError``) if Dask is not installed."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise DaskMissingError(
            f"cluster= runs a pool on a Dask cluster, which needs dask and distributed: "
            f"{INSTALL_HINT} ({exc})"
        ) from exc


def pool_class() -> type[Any]:
    """``pool.ClusterPool`` (after checking that Dask is there)."""
    require_dask()
    from .pool import ClusterPool

    return ClusterPool


def executor_class() -> type[Any]:
    """``executor.ClusterExecutor`` (after checking that Dask is there)."""
    require_dask()
    from .executor import ClusterExecutor

    return ClusterExecutor

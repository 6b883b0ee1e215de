"""Rows of remote workers (Dask) for the monitor, from whoever provides them.

The dashboard imports no Dask: a cluster pool (``mpnb.cluster.rows``) installs a
provider here, and the monitor asks ``rows()`` for plain dicts (``address``,
``threads``, ``cpu``, ``memory``, ``running``, ``done``, ``scheduler``). With no
provider, ``rows()`` is empty and costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["set_provider", "rows", "text"]

_provider: Callable[[], list[dict[str, Any]]] | None = None


def set_provider(provider: Callable[[], list[dict[str, Any]]] | None) -> None:
    """Install the function that lists remote workers (``None`` removes it)."""
    global _provider
    _provider = provider


def rows() -> list[dict[str, Any]]:
    """The remote workers now, or ``[]``; never raises."""
    provider = _provider
    if provider is None:
        return []
    try:
        return provider()
    except Exception:
        return []


def text(workers: list[dict[str, Any]]) -> list[str]:
    """One line per remote worker, as the monitor shows them."""
    lines = []
    for w in workers:
        lines.append(
            f"dask {w['address']}  threads {w['threads']}  cpu {w['cpu']:.0f}%  "
            f"mem {w['memory'] / 2**20:.0f} MiB  running {w['running']}  done {w['done']}"
        )
    return lines

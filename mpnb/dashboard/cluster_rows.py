"""Rows of remote workers (Dask) for the monitor, from whoever provides them.

The dashboard imports no Dask: a cluster pool (``mpnb.cluster.rows``) installs a
provider here, and the monitor asks ``rows()`` for plain dicts (``address``,
``threads``, ``cpu``, ``memory``, ``running``, ``done``, ``scheduler``). With no
provider, ``rows()`` is empty and costs nothing.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

__all__ = ["set_provider", "rows", "text", "html_table"]

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
    if not workers:
        return []
    rows = [_COLUMNS] + [_cells(w) for w in workers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return ["  ".join(c.ljust(n) for c, n in zip(row, widths)).rstrip() for row in rows]


_COLUMNS = ("dask worker", "threads", "CPU", "memory", "running", "done")


def _cells(w: dict[str, Any]) -> tuple[str, ...]:
    return (
        str(w["address"]),
        str(w["threads"]),
        f"{w['cpu']:.0f}%",
        f"{w['memory'] / 2**20:.0f} MiB",
        str(w["running"]),
        str(w["done"]),
    )


def html_table(workers: list[dict[str, Any]]) -> str:
    """The remote workers as an HTML table (empty string if there are none)."""
    if not workers:
        return ""
    cell = "padding:1px 6px;text-align:left"
    head = "".join(f'<th style="{cell}">{c}</th>' for c in _COLUMNS)
    body = "".join(
        '<tr class="mpnb-dask-worker">'
        + "".join(f'<td style="{cell}">{html.escape(c)}</td>' for c in _cells(w))
        + "</tr>"
        for w in workers
    )
    return (
        '<table class="mpnb-dask-workers" style="border-collapse:collapse;margin-top:6px">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )

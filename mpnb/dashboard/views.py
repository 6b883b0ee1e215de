"""The dashboard's views of a snapshot: a text table, and self-contained HTML.

``render_text`` is what terminals, scripts and ``repr`` show; ``render_html`` is what a
stopped dashboard leaves in the notebook, and the snapshot a saved notebook keeps under
a live widget. The widget (``mpnb.dashboard.widget``) builds its parts from the same
pieces (``html_header``, ``html_cores``, ...), so every view says the same thing.
Plain strings: nothing here imports psutil, ipywidgets or IPython.
"""

from __future__ import annotations

import html
import time

from . import cluster_rows
from .snapshot import PoolSample, ProcessSample, Snapshot

__all__ = [
    "render_text",
    "render_html",
    "html_header",
    "html_cores",
    "html_trends",
    "html_processes",
    "pool_line",
    "shown_pools",
]

# Colour of each state in the HTML views.
_STATE_COLOURS = {
    "starting": "#b26a00",
    "running": "#1b7f3b",
    "sleeping": "#3c6e9f",
    "exiting": "#b26a00",
    "finished": "#555",
    "failed": "#c62828",
    "killed": "#8e0000",
}
_SPARKS = "▁▂▃▄▅▆▇█"
_COLUMNS = ("name", "pid", "state", "exit", "CPU %", "memory", "time", "task")
_CELL = "padding:1px 8px;text-align:left;white-space:nowrap"


# -- formatting -------------------------------------------------------------------------
def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _spark(values: tuple[float, ...], width: int = 30) -> str:
    values = values[-width:]
    return "".join(_SPARKS[min(len(_SPARKS) - 1, int(v / 100 * len(_SPARKS)))] for v in values)


def _cells(p: ProcessSample) -> tuple[str, ...]:
    detail = p.task or p.error or ""
    return (
        p.name,
        "" if p.pid is None else str(p.pid),
        p.state,
        p.exit_status,
        _percent(p.cpu_percent),
        _bytes(p.rss),
        _duration(p.runtime),
        detail,
    )


def pool_line(pool: PoolSample) -> str:
    state = ", closed" if pool.closed else ""
    return (
        f"{pool.name} ({pool.start_method}, {pool.processes} processes{state}): "
        f"{pool.done}/{pool.submitted} done, {pool.failed} failed, {pool.rate:.1f} tasks/s"
    )


def shown_pools(snapshot: Snapshot) -> list[PoolSample]:
    """Open pools, and closed ones that still have processes listed."""
    listed = {p.pool for p in snapshot.processes}
    return [pool for pool in snapshot.pools if not pool.closed or pool.name in listed]


def _header(snapshot: Snapshot, stopped: bool, saved: bool = False) -> str:
    system = snapshot.system
    if saved:  # what a saved notebook shows: say it is a snapshot, and of when
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.time))
        status = f"snapshot taken {when}"
    else:
        status = "stopped" if stopped else "live"
        status += f", {time.strftime('%H:%M:%S', time.localtime(snapshot.time))}"
    return (
        f"mpnb monitor ({status}): "
        f"CPU {system.cpu_total:.0f}% of {len(system.cpu_percent)} cores, memory "
        f"{system.memory_percent:.0f}% ({_bytes(system.memory_used)} of "
        f"{_bytes(system.memory_total)}), sampler {100 * snapshot.sampler_cost:.2f}% of a core"
    )


# -- text -------------------------------------------------------------------------------
def render_text(snapshot: Snapshot, stopped: bool = False, saved: bool = False) -> str:
    """The dashboard as a plain text table (``saved``: labelled as a snapshot)."""
    system = snapshot.system
    lines = [
        _header(snapshot, stopped, saved),
        "cores  " + "  ".join(f"{i}:{v:3.0f}%" for i, v in enumerate(system.cpu_percent)),
        f"CPU    {_spark(snapshot.cpu_history)}",
        f"memory {_spark(snapshot.memory_history)}",
    ]
    lines += [pool_line(pool) for pool in shown_pools(snapshot)]
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for group, processes in _groups(snapshot):
        if group is not None:
            rows.append((f"[{group}]",) + ("",) * (len(_COLUMNS) - 1))
        indent = "  " if group is not None else ""
        rows += [(indent + cells[0],) + cells[1:] for cells in map(_cells, processes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append("(no process started through mpnb yet)")
    lines += cluster_rows.text(cluster_rows.rows())
    return "\n".join(lines)


def _groups(snapshot: Snapshot) -> list[tuple[str | None, tuple[ProcessSample, ...]]]:
    groups: list[tuple[str | None, tuple[ProcessSample, ...]]] = []
    if snapshot.standalone:
        groups.append((None, snapshot.standalone))
    for pool in snapshot.pools:
        workers = snapshot.pool_workers(pool.name)
        if workers:
            groups.append((pool.name, workers))
    return groups


# -- HTML -------------------------------------------------------------------------------
def html_cores(snapshot: Snapshot) -> str:
    bars = []
    for i, value in enumerate(snapshot.system.cpu_percent):
        bars.append(
            f'<div class="mpnb-core" data-core="{i}" title="core {i}: {value:.0f}%" '
            'style="display:inline-flex;flex-direction:column-reverse;width:14px;height:40px;'
            'margin:0 3px 0 0;background:#e8e8e8;vertical-align:bottom">'
            f'<div style="height:{value:.0f}%;background:#2e7d32"></div></div>'
        )
    return (
        '<div class="mpnb-cores" style="margin:4px 0">'
        '<span style="display:inline-block;width:110px;vertical-align:bottom">'
        f"CPU per core</span>{''.join(bars)}</div>"
    )


def _svg_trend(values: tuple[float, ...], colour: str, label: str, width: int = 160) -> str:
    height, n = 30, max(len(values), 2)
    points = " ".join(
        f"{i * width / (n - 1):.1f},{height - v / 100 * height:.1f}" for i, v in enumerate(values)
    )
    last = f"{values[-1]:.0f}%" if values else ""
    return (
        f'<span class="mpnb-trend" style="display:inline-block;margin-right:16px">'
        f'<svg width="{width}" height="{height}" style="background:#f4f4f4;'
        f'vertical-align:middle"><polyline fill="none" stroke="{colour}" '
        f'stroke-width="1.5" points="{points}"/></svg> {label} {last}</span>'
    )


def html_trends(snapshot: Snapshot) -> str:
    return (
        '<div><span style="display:inline-block;width:110px">recent</span>'
        f"{_svg_trend(snapshot.cpu_history, '#2e7d32', 'CPU')}"
        f"{_svg_trend(snapshot.memory_history, '#1565c0', 'memory')}</div>"
    )


def _html_pool(pool: PoolSample) -> str:
    total = max(pool.submitted, 1)
    done = 100 * pool.done / total
    failed = 100 * pool.failed / total
    return (
        f'<div class="mpnb-pool" data-pool="{html.escape(pool.name)}">'
        '<span style="display:inline-flex;width:160px;height:10px;background:#e8e8e8;'
        f'margin-right:8px"><span style="width:{done:.1f}%;background:#2e7d32"></span>'
        f'<span style="width:{failed:.1f}%;background:#c62828"></span></span>'
        f"{html.escape(pool_line(pool))}</div>"
    )


def html_processes(snapshot: Snapshot) -> str:
    head = "".join(f'<th style="{_CELL}">{c}</th>' for c in _COLUMNS)
    rows = []
    for group, processes in _groups(snapshot):
        if group is not None:
            rows.append(
                f'<tr class="mpnb-pool-head"><td colspan="{len(_COLUMNS)}" '
                f'style="{_CELL};font-weight:bold">{html.escape(group)}</td></tr>'
            )
        for p in processes:
            cells = [html.escape(c) for c in _cells(p)]
            cells[2] = (
                f'<span style="color:{_STATE_COLOURS.get(p.state, "#000")}">{cells[2]}</span>'
            )
            if group is not None:
                cells[0] = "&nbsp;&nbsp;" + cells[0]
            tds = "".join(f'<td style="{_CELL}">{c}</td>' for c in cells)
            rows.append(
                f'<tr class="mpnb-process" data-pid="{p.pid or ""}" '
                f'data-state="{p.state}">{tds}</tr>'
            )
    if not rows:
        rows.append(
            f'<tr><td colspan="{len(_COLUMNS)}" style="{_CELL};color:#777">'
            "no process started through mpnb yet</td></tr>"
        )
    return (
        '<table class="mpnb-processes" style="border-collapse:collapse;'
        f'font-variant-numeric:tabular-nums"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def html_header(snapshot: Snapshot, stopped: bool, saved: bool = False) -> str:
    header = html.escape(_header(snapshot, stopped, saved))
    return f'<div class="mpnb-header" style="font-weight:bold">{header}</div>'


def render_html(snapshot: Snapshot, stopped: bool = False, saved: bool = False) -> str:
    """The whole dashboard as one self-contained HTML fragment (``saved``: labelled as a
    snapshot)."""
    pools = "".join(_html_pool(p) for p in shown_pools(snapshot))
    return (
        f'<div class="mpnb-dashboard" style="font-size:12px">'
        f"{html_header(snapshot, stopped, saved)}"
        f"{html_cores(snapshot)}{html_trends(snapshot)}{pools}"
        f"{html_processes(snapshot)}{cluster_rows.html_table(cluster_rows.rows())}</div>"
    )

"""The process dashboard: ``mpnb.monitor()`` and ``%mp_monitor``.

In a Jupyter kernel it is an ipywidgets box that a background :class:`~mpnb._monitor.Sampler`
updates through the kernel's comms (no web server or port of its own, so it works
wherever widgets do: JupyterLab, Notebook, VS Code, Binder). Outside a kernel
(terminal IPython, scripts) it is a text table.

What a saved notebook keeps: each display is two outputs, the widget and an HTML
snapshot of it, refreshed after every cell, that the widget hides (CSS) wherever it
renders. A notebook saved while the dashboard runs thus shows the snapshot where the
widget cannot be shown (no saved widget state, nbviewer, GitHub). When the dashboard
stops (its Stop button, ``close()``, ``%mp_monitor --stop``, ``%unload_ext mpnb``),
the widget is replaced by the HTML of the last snapshot.

ipywidgets is imported only when a widget is built; psutil only by ``mpnb._monitor``.
"""
from __future__ import annotations

import html
import secrets
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ._monitor import DEFAULT_HISTORY, PoolSample, ProcessSample, Sampler, Snapshot

if TYPE_CHECKING:
    import ipywidgets

__all__ = ["Dashboard", "monitor", "render_html", "render_text"]

_MISSING_IPYWIDGETS = (
    "mpnb's live dashboard needs ipywidgets in the kernel: pip install 'ipywidgets>=8' "
    "(and restart the kernel). Without it, print(dashboard) shows a text table."
)

# Colour of each state in the HTML views.
_STATE_COLOURS = {
    "starting": "#b26a00", "running": "#1b7f3b", "sleeping": "#3c6e9f",
    "exiting": "#b26a00", "finished": "#555", "failed": "#c62828", "killed": "#8e0000",
}
_SPARKS = "▁▂▃▄▅▆▇█"
_COLUMNS = ("name", "pid", "state", "exit", "CPU %", "memory", "time", "task")
_CELL = "padding:1px 8px;text-align:left;white-space:nowrap"
# Hides a live dashboard's snapshot output, and in JupyterLab its output row too.
_HIDE_SNAPSHOT = ('<style>.mpnb-snapshot[data-dashboard="{tag}"]{{display:none}}'
                  '.jp-OutputArea-child:has(.mpnb-snapshot[data-dashboard="{tag}"])'
                  '{{display:none}}</style>')
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


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
    return (p.name, "" if p.pid is None else str(p.pid), p.state, p.exit_status,
            _percent(p.cpu_percent), _bytes(p.rss), _duration(p.runtime), detail)


def _pool_line(pool: PoolSample) -> str:
    state = ", closed" if pool.closed else ""
    return (f"{pool.name} ({pool.start_method}, {pool.processes} processes{state}): "
            f"{pool.done}/{pool.submitted} done, {pool.failed} failed, {pool.rate:.1f} tasks/s")


def _shown_pools(snapshot: Snapshot) -> list[PoolSample]:
    """Open pools, and closed ones that still have processes listed."""
    listed = {p.pool for p in snapshot.processes}
    return [pool for pool in snapshot.pools if not pool.closed or pool.name in listed]


def _header(snapshot: Snapshot, stopped: bool) -> str:
    system = snapshot.system
    status = "stopped" if stopped else "live"
    return (f"mpnb monitor ({status}, {time.strftime('%H:%M:%S', time.localtime(snapshot.time))}): "
            f"CPU {system.cpu_total:.0f}% of {len(system.cpu_percent)} cores, memory "
            f"{system.memory_percent:.0f}% ({_bytes(system.memory_used)} of "
            f"{_bytes(system.memory_total)}), sampler {100 * snapshot.sampler_cost:.2f}% of a core")


# -- text -------------------------------------------------------------------------------
def render_text(snapshot: Snapshot, stopped: bool = False) -> str:
    """The dashboard as a plain text table."""
    system = snapshot.system
    lines = [_header(snapshot, stopped),
             "cores  " + "  ".join(f"{i}:{v:3.0f}%" for i, v in enumerate(system.cpu_percent)),
             f"CPU    {_spark(snapshot.cpu_history)}",
             f"memory {_spark(snapshot.memory_history)}"]
    lines += [_pool_line(pool) for pool in _shown_pools(snapshot)]
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
def _html_cores(snapshot: Snapshot) -> str:
    bars = []
    for i, value in enumerate(snapshot.system.cpu_percent):
        bars.append(
            f'<div class="mpnb-core" data-core="{i}" title="core {i}: {value:.0f}%" '
            'style="display:inline-flex;flex-direction:column-reverse;width:14px;height:40px;'
            'margin:0 3px 0 0;background:#e8e8e8;vertical-align:bottom">'
            f'<div style="height:{value:.0f}%;background:#2e7d32"></div></div>')
    return ('<div class="mpnb-cores" style="margin:4px 0">'
            '<span style="display:inline-block;width:110px;vertical-align:bottom">'
            f"CPU per core</span>{''.join(bars)}</div>")


def _svg_trend(values: tuple[float, ...], colour: str, label: str, width: int = 160) -> str:
    height, n = 30, max(len(values), 2)
    points = " ".join(f"{i * width / (n - 1):.1f},{height - v / 100 * height:.1f}"
                      for i, v in enumerate(values))
    last = f"{values[-1]:.0f}%" if values else ""
    return (f'<span class="mpnb-trend" style="display:inline-block;margin-right:16px">'
            f'<svg width="{width}" height="{height}" style="background:#f4f4f4;'
            f'vertical-align:middle"><polyline fill="none" stroke="{colour}" '
            f'stroke-width="1.5" points="{points}"/></svg> {label} {last}</span>')


def _html_trends(snapshot: Snapshot) -> str:
    return ('<div><span style="display:inline-block;width:110px">recent</span>'
            f'{_svg_trend(snapshot.cpu_history, "#2e7d32", "CPU")}'
            f'{_svg_trend(snapshot.memory_history, "#1565c0", "memory")}</div>')


def _html_pool(pool: PoolSample) -> str:
    total = max(pool.submitted, 1)
    done = 100 * pool.done / total
    failed = 100 * pool.failed / total
    return (f'<div class="mpnb-pool" data-pool="{html.escape(pool.name)}">'
            '<span style="display:inline-flex;width:160px;height:10px;background:#e8e8e8;'
            f'margin-right:8px"><span style="width:{done:.1f}%;background:#2e7d32"></span>'
            f'<span style="width:{failed:.1f}%;background:#c62828"></span></span>'
            f"{html.escape(_pool_line(pool))}</div>")


def _html_processes(snapshot: Snapshot) -> str:
    head = "".join(f'<th style="{_CELL}">{c}</th>' for c in _COLUMNS)
    rows = []
    for group, processes in _groups(snapshot):
        if group is not None:
            rows.append(f'<tr class="mpnb-pool-head"><td colspan="{len(_COLUMNS)}" '
                        f'style="{_CELL};font-weight:bold">{html.escape(group)}</td></tr>')
        for p in processes:
            cells = [html.escape(c) for c in _cells(p)]
            cells[2] = f'<span style="color:{_STATE_COLOURS.get(p.state, "#000")}">{cells[2]}</span>'
            if group is not None:
                cells[0] = "&nbsp;&nbsp;" + cells[0]
            tds = "".join(f'<td style="{_CELL}">{c}</td>' for c in cells)
            rows.append(f'<tr class="mpnb-process" data-pid="{p.pid or ""}" '
                        f'data-state="{p.state}">{tds}</tr>')
    if not rows:
        rows.append(f'<tr><td colspan="{len(_COLUMNS)}" style="{_CELL};color:#777">'
                    "no process started through mpnb yet</td></tr>")
    return ('<table class="mpnb-processes" style="border-collapse:collapse;'
            f'font-variant-numeric:tabular-nums"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _html_header(snapshot: Snapshot, stopped: bool) -> str:
    return f'<div class="mpnb-header" style="font-weight:bold">{html.escape(_header(snapshot, stopped))}</div>'


def render_html(snapshot: Snapshot, stopped: bool = False) -> str:
    """The whole dashboard as one self-contained HTML fragment."""
    pools = "".join(_html_pool(p) for p in _shown_pools(snapshot))
    return (f'<div class="mpnb-dashboard" style="font-size:12px">{_html_header(snapshot, stopped)}'
            f"{_html_cores(snapshot)}{_html_trends(snapshot)}{pools}"
            f"{_html_processes(snapshot)}</div>")


# -- the dashboard ----------------------------------------------------------------------
def _kernel() -> Any:
    """The running ipykernel's shell, if code runs in one (one that can show widgets)."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return None
    shell = ipython_module.get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def _ipywidgets() -> Any:
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(_MISSING_IPYWIDGETS) from exc
    return ipywidgets


class Dashboard:
    """A live view of a :class:`~mpnb._monitor.Sampler`: widget, HTML or text."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self._lock = threading.RLock()
        self._tag = secrets.token_hex(6)
        self._widget_ids: list[str] = []  # display ids of the widget outputs
        self._snapshot_ids: list[str] = []  # and of the snapshots under them
        self._shell: Any = None  # whose post_run_cell refreshes the snapshots
        self._box: ipywidgets.VBox | None = None
        self._parts: dict[str, Any] = {}
        self._pool_rows: dict[str, Any] = {}
        sampler.subscribe(self._update)
        sampler.on_stop(self._freeze)

    @property
    def snapshot(self) -> Snapshot:
        """The latest snapshot (taking one if the sampler has none yet)."""
        return self.sampler.latest or self.sampler.sample()

    @property
    def closed(self) -> bool:
        return self.sampler.stopped

    def close(self) -> None:
        """Stop sampling; every display of this dashboard keeps its last snapshot."""
        self.sampler.stop()

    # -- the widget ------------------------------------------------------------------
    @property
    def widget(self) -> ipywidgets.VBox:
        """The ipywidgets box (built on first use; closing it stops the dashboard)."""
        with self._lock:
            if self._box is None:
                self._box = self._build()
            return self._box

    def _build(self) -> ipywidgets.VBox:
        widgets = _ipywidgets()
        parts = self._parts
        parts["header"] = widgets.HTML()
        parts["stop"] = widgets.Button(description="Stop", icon="stop", tooltip="Stop monitoring",
                                       layout=widgets.Layout(width="80px"))
        parts["stop"].on_click(lambda _button: self.close())
        parts["cores"] = widgets.HTML()
        parts["trends"] = widgets.HTML()
        parts["pools"] = widgets.VBox()
        parts["processes"] = widgets.HTML()
        box = widgets.VBox([
            widgets.HBox([parts["stop"], parts["header"]]),
            parts["cores"], parts["trends"], parts["pools"], parts["processes"]])
        box.add_class("mpnb-widget")
        box.observe(self._on_widget_closed, names="comm")
        self._render(self.snapshot, widgets)
        return box

    def _on_widget_closed(self, change: dict[str, Any]) -> None:
        if change["new"] is None:
            self.close()

    def _update(self, snapshot: Snapshot) -> None:
        if self._box is not None:
            self._render(snapshot, _ipywidgets())

    def _render(self, snapshot: Snapshot, widgets: Any) -> None:
        with self._lock:
            parts = self._parts
            parts["header"].value = (_HIDE_SNAPSHOT.format(tag=self._tag)
                                     + _html_header(snapshot, self.closed))
            parts["cores"].value = _html_cores(snapshot)
            parts["trends"].value = _html_trends(snapshot)
            shown = _shown_pools(snapshot)
            for pool in shown:
                if pool.name not in self._pool_rows:
                    bar = widgets.IntProgress(min=0, max=1, layout=widgets.Layout(width="160px"))
                    bar.add_class("mpnb-pool-bar")
                    self._pool_rows[pool.name] = widgets.HBox([bar, widgets.HTML()])
                bar, label = self._pool_rows[pool.name].children
                with bar.hold_sync():
                    bar.max = max(pool.submitted, 1)
                    bar.value = min(pool.done + pool.failed, bar.max)
                    bar.bar_style = ("danger" if pool.failed else
                                     "success" if pool.closed and pool.done == pool.submitted
                                     else "")
                label.value = html.escape(_pool_line(pool))
            rows = tuple(self._pool_rows[p.name] for p in shown)
            if rows != parts["pools"].children:
                parts["pools"].children = rows
            for name in set(self._pool_rows) - {p.name for p in shown}:
                _close_tree(self._pool_rows.pop(name))
            parts["processes"].value = _html_processes(snapshot)

    def _freeze(self) -> None:
        """Put the last snapshot's HTML in place of every widget; close the widgets."""
        snapshot = self.snapshot
        if self._shell is not None:
            self._shell.events.unregister("post_run_cell", self._after_cell)
            self._shell = None
        if self._widget_ids or self._snapshot_ids:
            from IPython.display import update_display
            bundle = self._static_bundle(snapshot)
            for display_id in self._widget_ids:
                update_display(bundle, raw=True, display_id=display_id)
            for display_id in self._snapshot_ids:
                update_display({"text/plain": ""}, raw=True, display_id=display_id)
        with self._lock:
            box, self._box = self._box, None
            if box is not None:
                box.unobserve(self._on_widget_closed, names="comm")
                for row in self._pool_rows.values():
                    _close_tree(row)
                _close_tree(box)

    def _static_bundle(self, snapshot: Snapshot) -> dict[str, str]:
        return {"text/html": render_html(snapshot, self.closed),
                "text/plain": render_text(snapshot, self.closed)}

    def _snapshot_bundle(self, snapshot: Snapshot) -> dict[str, str]:
        return {"text/html": f'<div class="mpnb-snapshot" data-dashboard="{self._tag}">'
                             f"{render_html(snapshot, self.closed)}</div>",
                "text/plain": render_text(snapshot, self.closed)}

    def _after_cell(self, result: Any = None) -> None:
        """Refresh the snapshots under the widgets (what a saved notebook keeps)."""
        if self.closed:
            if self._shell is not None:
                self._shell.events.unregister("post_run_cell", self._after_cell)
                self._shell = None
            return
        from IPython.display import update_display
        bundle = self._snapshot_bundle(self.sampler.sample())
        for display_id in self._snapshot_ids:
            update_display(bundle, raw=True, display_id=display_id)

    # -- display protocols -------------------------------------------------------------
    def _ipython_display_(self) -> None:
        from IPython.display import display
        shell = _kernel()
        if shell is None or self.closed:
            display(self._static_bundle(self.snapshot), raw=True)
            return
        view = {_WIDGET_VIEW: self.widget._repr_mimebundle_()[_WIDGET_VIEW],
                "text/plain": "mpnb monitor (a live widget; its snapshot follows)"}
        self._widget_ids.append(display(view, raw=True, display_id=True).display_id)
        snapshot = self._snapshot_bundle(self.snapshot)
        self._snapshot_ids.append(display(snapshot, raw=True, display_id=True).display_id)
        with self._lock:
            if self._shell is None:
                self._shell = shell
                shell.events.register("post_run_cell", self._after_cell)

    def _repr_html_(self) -> str:
        return render_html(self.snapshot, self.closed)

    def __repr__(self) -> str:
        return render_text(self.snapshot, self.closed)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


_current: list[Dashboard] = []  # the dashboard monitor() made last
_current_lock = threading.Lock()


def monitor(interval: float = 0.5, history: int = DEFAULT_HISTORY) -> Dashboard:
    """A live dashboard of the processes and pools mpnb started, and of the machine.

    ``interval``: seconds between samples; ``history``: how many finished processes
    stay listed. Displayed in a notebook (last expression of a cell, or ``display``),
    it updates itself while cells run; ``close()`` (or its Stop button) stops it.
    A new dashboard stops the previous one, which keeps showing its last snapshot,
    so re-running a cell never leaves a sampler running unseen.
    """
    dashboard = Dashboard(Sampler(interval, history=history))
    with _current_lock:
        previous = _current[:]
        _current[:] = [dashboard]
    for old in previous:
        old.close()
    dashboard.sampler.start()
    return dashboard

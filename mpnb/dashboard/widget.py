"""The process dashboard behind ``mpnb.monitor()`` and ``%mp_monitor``.

In a Jupyter kernel it is an ipywidgets box that a background
:class:`~mpnb.dashboard.sampler.Sampler` updates through the kernel's comms (no web
server or port of its own, so it works wherever widgets do: JupyterLab, Notebook,
VS Code, Binder). Outside a kernel (terminal IPython, scripts) it is a text table.

What a saved notebook keeps: each display is two outputs, the widget and an HTML
snapshot of it, refreshed after every cell, that the widget hides (CSS) wherever it
renders. A notebook saved while the dashboard runs thus shows the snapshot where the
widget cannot be shown (no saved widget state, nbviewer, GitHub). When the dashboard
stops (its Stop button, ``close()``, ``%mp_monitor --stop``, ``%unload_ext mpnb``),
the widget is replaced by the HTML of the last snapshot.

The sampler starts when the dashboard is first displayed (or ``start()`` is called):
one assigned and never shown samples nothing. The widget sends only what changed, and
nothing while mpnb's processes and pools are idle (no process running or busy with a
task, no count changed): the machine's CPU and memory lines then wait for the next
change. Below the table, the timeline of the last run (``mpnb.timeline``), redrawn
when a task ended, at most once per ten times what drawing it took.

Outside the widget, it renders with ``mpnb.dashboard.views``. ipywidgets and IPython's
display are imported only when a widget is built or shown; psutil only by
``mpnb.dashboard.sampler``.
"""

from __future__ import annotations

import html
import secrets
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .._pool.telemetry import flush_all
from ..timeline.record import last_recorder
from ..timeline.render import last_run
from .sampler import DEFAULT_HISTORY, Sampler
from .snapshot import Snapshot
from .views import (
    html_cores,
    html_header,
    html_processes,
    html_trends,
    pool_line,
    render_html,
    render_text,
    shown_pools,
)

if TYPE_CHECKING:
    import ipywidgets

__all__ = ["Dashboard", "monitor"]

_MISSING_IPYWIDGETS = (
    "mpnb's live dashboard needs ipywidgets in the kernel: pip install 'ipywidgets>=8' "
    "(and restart the kernel). Without it, print(dashboard) shows a text table."
)

# Hides a live dashboard's snapshot output, and in JupyterLab its output row too.
_HIDE_SNAPSHOT = (
    '<style>.mpnb-snapshot[data-dashboard="{tag}"]{{display:none}}'
    '.jp-OutputArea-child:has(.mpnb-snapshot[data-dashboard="{tag}"])'
    "{{display:none}}</style>"
)
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


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
    """A live view of a :class:`~mpnb.dashboard.sampler.Sampler`: widget, HTML or text."""

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
        self._activity: object = None  # what the widget showed last, in short
        self._timeline_key: object = None
        self._timeline_due = 0.0  # monotonic time before which it is not redrawn
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

    def start(self) -> Dashboard:
        """Start sampling (displaying the dashboard does so); returns the dashboard."""
        if not self.closed:
            self.sampler.start()
        return self

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
        parts["stop"] = widgets.Button(
            description="Stop",
            icon="stop",
            tooltip="Stop monitoring",
            layout=widgets.Layout(width="80px"),
        )
        parts["stop"].on_click(lambda _button: self.close())
        parts["cores"] = widgets.HTML()
        parts["trends"] = widgets.HTML()
        parts["pools"] = widgets.VBox()
        parts["processes"] = widgets.HTML()
        parts["timeline"] = widgets.HTML()
        parts["timeline"].add_class("mpnb-dashboard-timeline")
        box = widgets.VBox(
            [
                widgets.HBox([parts["stop"], parts["header"]]),
                parts["cores"],
                parts["trends"],
                parts["pools"],
                parts["processes"],
                parts["timeline"],
            ]
        )
        box.add_class("mpnb-widget")
        box.observe(self._on_widget_closed, names="comm")
        self._render(self.snapshot, widgets)
        return box

    def _on_widget_closed(self, change: dict[str, Any]) -> None:
        if change["new"] is None:
            self.close()

    def _update(self, snapshot: Snapshot) -> None:
        if self._box is None:
            return
        activity = _activity(snapshot)
        if activity is not None and activity == self._activity:
            with self._lock:  # idle: nothing is sent, unless a task ended meanwhile
                self._render_timeline()
            return
        self._render(snapshot, _ipywidgets())

    def _render(self, snapshot: Snapshot, widgets: Any) -> None:
        with self._lock:
            self._activity = _activity(snapshot)
            parts = self._parts
            parts["header"].value = _HIDE_SNAPSHOT.format(tag=self._tag) + html_header(
                snapshot, self.closed
            )
            parts["cores"].value = html_cores(snapshot)
            parts["trends"].value = html_trends(snapshot)
            shown = shown_pools(snapshot)
            for pool in shown:
                if pool.name not in self._pool_rows:
                    bar = widgets.IntProgress(min=0, max=1, layout=widgets.Layout(width="160px"))
                    bar.add_class("mpnb-pool-bar")
                    self._pool_rows[pool.name] = widgets.HBox([bar, widgets.HTML()])
                bar, label = self._pool_rows[pool.name].children
                with bar.hold_sync():
                    bar.max = max(pool.submitted, 1)
                    bar.value = min(pool.done + pool.failed, bar.max)
                    bar.bar_style = (
                        "danger"
                        if pool.failed
                        else "success"
                        if pool.closed and pool.done == pool.submitted
                        else ""
                    )
                label.value = html.escape(pool_line(pool))
            rows = tuple(self._pool_rows[p.name] for p in shown)
            if rows != parts["pools"].children:
                parts["pools"].children = rows
            for name in set(self._pool_rows) - {p.name for p in shown}:
                _close_tree(self._pool_rows.pop(name))
            parts["processes"].value = html_processes(snapshot)
            self._render_timeline()

    def _render_timeline(self) -> None:
        """The last run's timeline, if a task ended since it was drawn."""
        recorder = last_recorder()
        if recorder is None:
            return
        raw = recorder.raw
        key = (id(recorder), recorder.run_from, len(raw), id(raw[-1]) if raw else None)
        now = time.monotonic()
        if key == self._timeline_key or now < self._timeline_due:
            return
        self._timeline_key = key
        markup = last_run()._repr_html_()
        self._parts["timeline"].value = markup
        self._timeline_due = now + 10 * (time.monotonic() - now)

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
        return {
            "text/html": render_html(snapshot, self.closed),
            "text/plain": render_text(snapshot, self.closed),
        }

    def _snapshot_bundle(self, snapshot: Snapshot) -> dict[str, str]:
        return {
            "text/html": f'<div class="mpnb-snapshot" data-dashboard="{self._tag}">'
            f"{render_html(snapshot, self.closed, saved=True)}</div>",
            "text/plain": render_text(snapshot, self.closed, saved=True),
        }

    def _after_cell(self, result: Any = None) -> None:
        """Refresh the snapshots under the widgets (what a saved notebook keeps)."""
        if self.closed:
            if self._shell is not None:
                self._shell.events.unregister("post_run_cell", self._after_cell)
                self._shell = None
            return
        from IPython.display import update_display

        flush_all()  # the pools' counts, final as the cell ends
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
        self.start()
        view = {
            _WIDGET_VIEW: self.widget._repr_mimebundle_()[_WIDGET_VIEW],
            "text/plain": "mpnb monitor (a live widget; its snapshot follows)",
        }
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


def _activity(snapshot: Snapshot) -> object:
    """What changes the dashboard when mpnb's processes and pools change; ``None`` while
    a process runs or has a task (its CPU, memory and run time change every sample)."""
    processes = []
    for p in snapshot.processes:
        if p.state == "running" or p.task is not None:
            return None
        processes.append((p.key, p.pid, p.state, p.exitcode, p.error))
    pools = tuple(
        (p.name, p.processes, p.submitted, p.done, p.failed, p.closed) for p in snapshot.pools
    )
    return (tuple(processes), pools)


_current: list[Dashboard] = []  # the dashboard monitor() made last
_current_lock = threading.Lock()


def monitor(interval: float = 0.5, history: int = DEFAULT_HISTORY) -> Dashboard:
    """A live dashboard of the processes and pools mpnb started, and of the machine.

    ``interval``: seconds between samples; ``history``: how many finished processes
    stay listed. Displayed in a notebook (last expression of a cell, or ``display``),
    it updates itself while cells run; ``close()`` (or its Stop button) stops it.
    A new dashboard stops the previous one, which keeps showing its last snapshot,
    so re-running a cell never leaves a sampler running unseen. Sampling starts when
    the dashboard is first displayed (or ``start()`` is called).
    """
    dashboard = Dashboard(Sampler(interval, history=history))
    with _current_lock:
        previous = _current[:]
        _current[:] = [dashboard]
    for old in previous:
        old.close()
    return dashboard

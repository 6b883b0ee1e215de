"""A progress bar for parallel work: an ipywidgets bar in Jupyter, text elsewhere.

``ProgressBar(total)`` shows done/total, rate, ETA and failures (``total=None``: an
iterable of unknown length, done and rate only); ``update`` is cheap
(redraws at most ``MIN_REDRAW`` apart); ``close(failed=True)`` turns the bar red.
ipywidgets is imported only when a widget bar is built.

A widget bar lives only as long as the kernel's widget state: a notebook saved from
the UI keeps none, and an export renders none offline. So ``close`` puts the final
state in place of the widget (``final_text``: ``16/16 done in 1.2 s``), as HTML (a
static bar) and as plain text, and closes the widgets: what the saved notebook, a
static export and the live view show from then on is the truth.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any

__all__ = ["ProgressBar"]

# Seconds between two redraws: often enough to look live, rarely enough to cost nothing.
MIN_REDRAW = 0.1


def _in_widget_frontend() -> bool:
    ipython = sys.modules.get("IPython")  # a kernel has it loaded; a script needs none
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _format_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    """done/total, rate, ETA and failures of a run of ``total`` items."""

    def __init__(
        self,
        total: int | None,
        description: str = "",
        *,
        widget: bool | None = None,
        stream: Any = None,
    ) -> None:
        self.total = total
        self.description = description
        self.done = 0
        self.failed = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._stream = stream or sys.stderr
        self._widget = None
        self._display: Any = None
        self._end: float | None = None
        if widget is None:
            widget = _in_widget_frontend()
        if widget:
            self._widget = self._make_widget()

    def _make_widget(self) -> Any:
        try:
            import ipywidgets
            from IPython.display import display
        except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency
            raise ImportError("the progress bar needs ipywidgets: pip install ipywidgets") from exc
        bar = ipywidgets.IntProgress(
            min=0,
            max=max(self.total or 1, 1),
            value=0,
            description=self.description,
            bar_style="info",
        )
        label = ipywidgets.HTML(value=self.text())
        box = ipywidgets.HBox([bar, label])
        box.add_class("mpnb-progress")
        self._display = display(box, display_id=True)
        self._bar, self._label = bar, label
        return box

    # -- state -------------------------------------------------------------------
    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def text(self) -> str:
        rate = self.rate
        failures = f", {self.failed} failed" if self.failed else ""
        if self.total is None:  # an iterable of unknown length
            return f"{self.done} done [{rate:.1f} items/s{failures}]"
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return f"{self.done}/{self.total} [{rate:.1f} items/s, ETA {_format_eta(eta)}{failures}]"

    def final_text(self, failed: bool = False) -> str:
        """What the bar says once closed: ``16/16 done in 1.2 s`` (``, 2 failed``)."""
        elapsed = (self._end or time.monotonic()) - self._start
        count = f"{self.done}" if self.total is None else f"{self.done}/{self.total}"
        failures = f", {self.failed} failed" if self.failed else ""
        if failed:
            text = f"stopped at {count} after {elapsed:.1f} s{failures}"
        else:
            text = f"{count} done in {elapsed:.1f} s{failures}"
        return f"{self.description}: {text}" if self.description else text

    def final_html(self, failed: bool = False) -> str:
        """The closed bar as self-contained HTML: a static bar and ``final_text``."""
        share = 1.0 if self.total is None else min(1.0, self.done / max(self.total, 1))
        colour = "#d9534f" if failed or self.failed else "#5cb85c"
        return (
            '<div class="mpnb-progress-final" style="display:flex;align-items:center;'
            'gap:8px;font-size:13px"><div style="width:200px;height:14px;'
            f'background:#eee;border-radius:2px"><div style="width:{100 * share:.0f}%;'
            f'height:100%;background:{colour};border-radius:2px"></div></div>'
            f"<span>{html.escape(self.final_text(failed))}</span></div>"
        )

    def update(self, done: int = 1, failed: int = 0) -> None:
        """Count ``done`` more finished items, ``failed`` of them failures."""
        self.done += done
        self.failed += failed
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if finished and self._widget is None:
            return  # the text bar's last line is drawn by close()
        if now - self._last_draw >= MIN_REDRAW or finished:
            self._last_draw = now
            self._draw()

    def _draw(self, final: bool = False) -> None:
        if self._widget is not None:
            if self.total is None:
                self._bar.max = max(self.done, 1)
            self._bar.value = self.done
            if self.failed:
                self._bar.bar_style = "danger"
            self._label.value = self.text()
        else:
            end = "\n" if final else "\r"
            self._stream.write(f"{self.description} {self.text()}".strip() + end)
            self._stream.flush()

    def close(self, failed: bool = False) -> None:
        """Final redraw; red if the run ``failed``, green otherwise. A widget bar gives
        way to its final state (see the module docstring)."""
        if self._end is None:
            self._end = time.monotonic()
        if self._widget is None:
            self._draw(final=True)
            return
        self._bar.bar_style = "danger" if failed or self.failed else "success"
        self._draw(final=True)
        if self._display is not None:
            self._display.update(
                {"text/html": self.final_html(failed), "text/plain": self.final_text(failed)},
                raw=True,
            )
            self._display = None
            for part in (self._bar, self._label, self._widget):
                part.close()

    def __repr__(self) -> str:
        return f"<ProgressBar {self.text()}>"

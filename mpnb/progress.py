"""A progress bar for parallel work: an ipywidgets bar in Jupyter, text elsewhere.

``ProgressBar(total)`` shows done/total, rate, ETA and failures (``total=None``: an
iterable of unknown length, done and rate only); ``update`` is cheap
(redraws at most ``MIN_REDRAW`` apart); ``close(failed=True)`` turns the bar red.
ipywidgets is imported only when a widget bar is built.
"""

from __future__ import annotations

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
        display(box)
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
        """Final redraw; red if the run ``failed``, green otherwise."""
        if self._widget is not None:
            self._bar.bar_style = "danger" if failed or self.failed else "success"
        self._draw(final=True)

    def __repr__(self) -> str:
        return f"<ProgressBar {self.text()}>"

"""``Timeline``: the task records of a run, shown inline (SVG in HTML), as text, or traced.

One lane per worker (or per plain process), a bar per task: blue done, red failed,
dark red with a cross where the worker died, grey cancelled; hovering a bar shows its
item(s) and duration (an SVG ``<title>``, no JavaScript). Above it, a summary names
the slowest tasks (stragglers) and the longest idle gaps. ``to_chrome_trace(path)``
writes the same records for Perfetto or chrome://tracing (``mpnb.timeline.trace``).

Nothing here imports IPython: the display protocols (``_repr_html_``,
``_repr_pretty_``) need none.
"""

from __future__ import annotations

import html
import os
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .record import (
    CANCELLED,
    CRASHED,
    ERROR,
    OK,
    RUNNING,
    TaskRecord,
    last_recorder,
    process_records,
)

__all__ = ["Timeline", "last_run", "processes", "COLOURS"]

COLOURS = {
    OK: "#4c78a8",
    ERROR: "#e45756",
    CRASHED: "#8b0000",
    CANCELLED: "#b0b0b0",
    RUNNING: "#9ecae1",
}
_TEXT_MARKS = {OK: "#", ERROR: "E", CRASHED: "X", CANCELLED: "c", RUNNING: ">"}
_MARK_RANK = {"X": 4, "E": 3, "c": 2, ">": 1, "#": 0}

# Drawing: widths in pixels; more tasks than ``MAX_BARS`` and neighbouring done tasks
# closer than a pixel are drawn as one bar.
_WIDTH, _LABEL_WIDTH, _LANE, _AXIS = 780, 210, 20, 22
MAX_BARS = 4_000
# A straggler ran at least this many times the median task; an idle gap is at least
# this share of the run.
STRAGGLER_FACTOR = 2.0
IDLE_SHARE = 0.1
_TEXT_WIDTH = 60


def _seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} s"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


class Timeline:
    """The tasks of a run, lane by lane (see the module docstring).

    ``tasks``: the ``TaskRecord``s, by start time; ``lanes``: the lane names, in the
    order shown. Make one with ``pool.timeline()``, ``executor.timeline()``,
    ``mpnb.timeline.last_run()`` or ``mpnb.timeline.processes()``.
    """

    def __init__(self, tasks: Iterable[TaskRecord], title: str = "timeline") -> None:
        self.tasks: list[TaskRecord] = sorted(tasks, key=lambda t: t.start)
        self.title = title
        first: dict[str, tuple[int, float]] = {}
        self._by_lane: dict[str, list[TaskRecord]] = {}
        for t in self.tasks:
            first.setdefault(t.lane, (t.worker, t.start))
            self._by_lane.setdefault(t.lane, []).append(t)
        self.lanes: list[str] = sorted(first, key=lambda lane: first[lane])
        self.start = min((t.start for t in self.tasks), default=0.0)
        self.end = max((t.end for t in self.tasks), default=0.0)

    @property
    def span(self) -> float:
        """Seconds from the first task's start to the last one's end."""
        return self.end - self.start

    def __len__(self) -> int:
        return len(self.tasks)

    def lane_tasks(self, lane: str) -> list[TaskRecord]:
        """The tasks of ``lane``, by start time."""
        return list(self._by_lane.get(lane, ()))

    # -- what stands out -----------------------------------------------------------------
    def stragglers(self, count: int = 3) -> list[TaskRecord]:
        """Up to ``count`` slowest tasks that ran ``STRAGGLER_FACTOR`` times the median
        or more, slowest first."""
        done = [t for t in self.tasks if t.outcome != RUNNING]
        if len(done) < 2:
            return []
        median = statistics.median(t.duration / max(t.count, 1) for t in done)
        slow = [t for t in done if t.duration / max(t.count, 1) >= STRAGGLER_FACTOR * median]
        slow = [t for t in slow if t.duration > 0]
        return sorted(slow, key=lambda t: t.duration, reverse=True)[:count]

    def idle_gaps(self, share: float = IDLE_SHARE) -> list[tuple[str, float, float]]:
        """``(lane, start, end)`` of each stretch of at least ``share`` of the run in
        which a lane ran nothing (before its first task and after its last included),
        longest first."""
        span = self.span
        if span <= 0:
            return []
        gaps = []
        crashed = {t.worker: t.end for t in self.tasks if t.outcome == CRASHED}
        for lane in self.lanes:
            tasks = self.lane_tasks(lane)
            # A worker that replaced one that died was not there before; one that died
            # is not there after.
            replaced = crashed.get(tasks[0].worker, self.end) < tasks[0].start
            at = tasks[0].start if replaced else self.start
            for t in tasks:
                if t.start - at >= share * span:
                    gaps.append((lane, at, t.start))
                at = max(at, t.end)
            if tasks[-1].outcome != CRASHED and self.end - at >= share * span:
                gaps.append((lane, at, self.end))
        return sorted(gaps, key=lambda g: g[2] - g[1], reverse=True)

    def summary(self) -> str:
        """One line of counts, then what stands out (stragglers, idle gaps)."""
        if not self.tasks:
            return f"{self.title}: no tasks recorded"
        outcomes = {o: sum(1 for t in self.tasks if t.outcome == o) for o in COLOURS}
        items = sum(t.count for t in self.tasks)
        errors = sum(t.errors for t in self.tasks if t.outcome == ERROR)
        busy = sum(t.duration for t in self.tasks)
        capacity = self.span * len(self.lanes)
        parts = [
            f"{self.title}: {len(self.tasks)} tasks ({items} items) on {len(self.lanes)} "
            f"lanes in {_seconds(self.span)}, busy {100 * busy / capacity:.0f}%"
            if capacity > 0
            else f"{self.title}: {len(self.tasks)} tasks ({items} items)"
        ]
        if errors:
            parts.append(f"{errors} item{'s' if errors != 1 else ''} failed")
        for outcome in (CRASHED, CANCELLED, RUNNING):
            if outcomes[outcome]:
                parts.append(f"{outcomes[outcome]} {outcome}")
        lines = ["; ".join(parts)]
        slow = self.stragglers()
        if slow:
            median = statistics.median(t.duration for t in self.tasks)
            lines.append(
                "slowest: "
                + ", ".join(
                    f"{t.what} {_seconds(t.duration)}"
                    + (f" ({t.duration / median:.1f}x the median)" if median > 0 else "")
                    + f" on {t.lane}"
                    for t in slow
                )
            )
        gaps = self.idle_gaps()[:3]
        if gaps:
            lines.append(
                "idle: "
                + ", ".join(
                    f"{lane} {_seconds(end - start)} from +{_seconds(start - self.start)}"
                    for lane, start, end in gaps
                )
            )
        return "\n".join(lines)

    # -- drawing -------------------------------------------------------------------------
    def _bars(self, lane: str, px_seconds: float) -> list[tuple[float, float, str, str, int]]:
        """``(start, end, outcome, title, tasks)`` per bar of ``lane``; many tasks close
        together merge into one bar (done ones only)."""
        merge = len(self.tasks) > MAX_BARS
        bars: list[list[Any]] = []
        for t in self.lane_tasks(lane):
            last = bars[-1] if bars else None
            if (
                merge
                and last is not None
                and t.outcome == OK
                and last[2] == OK
                and t.start - last[1] < px_seconds
            ):
                last[1] = max(last[1], t.end)
                last[4] += 1
                last[5] += t.count
                continue
            bars.append([t.start, t.end, t.outcome, self._title(t), 1, t.count])
        out = []
        for start, end, outcome, title, tasks, items in bars:
            if tasks > 1:
                title = f"{tasks} tasks ({items} items), {_seconds(end - start)}"
            out.append((start, end, outcome, title, tasks))
        return out

    @staticmethod
    def _title(t: TaskRecord) -> str:
        text = f"{t.what}: {_seconds(t.duration)}, {t.outcome}"
        if t.errors and t.outcome == ERROR and t.count > 1:
            text += f" ({t.errors} of {t.count} items failed)"
        if t.exitcode is not None and t.outcome != OK:
            text += f", exit code {t.exitcode}"
        return text

    def svg(self) -> str:
        """The timeline as a self-contained SVG element."""
        lanes = self.lanes
        height = _AXIS + _LANE * max(len(lanes), 1) + 6
        plot = _WIDTH - _LABEL_WIDTH - 10
        span = self.span or 1e-9
        scale = plot / span
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="mpnb-timeline-svg" '
            f'width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}" '
            f'font-family="sans-serif" font-size="11">'
        ]
        for i in range(5):  # the time axis
            x = _LABEL_WIDTH + plot * i / 4
            anchor = "end" if i == 4 else "middle"
            parts.append(
                f'<line x1="{x:.1f}" y1="{_AXIS - 4}" x2="{x:.1f}" y2="{height - 4}" '
                f'stroke="#ddd"/><text x="{x:.1f}" y="{_AXIS - 8}" text-anchor="{anchor}" '
                f'fill="#666">{_seconds(span * i / 4) if i else "0"}</text>'
            )
        for row, lane in enumerate(lanes):
            y = _AXIS + row * _LANE
            parts.append(
                f'<g class="mpnb-lane" data-lane="{html.escape(lane)}">'
                f'<text x="{_LABEL_WIDTH - 6}" y="{y + 14}" text-anchor="end">'
                f"{html.escape(lane)}</text>"
            )
            bars = self._bars(lane, 1 / scale)
            bars.sort(key=lambda bar: bar[2] != OK)  # failures drawn last, on top
            for start, end, outcome, title, _ in bars:
                x = _LABEL_WIDTH + (start - self.start) * scale
                w = (end - start) * scale
                w = w - 1 if w > 3 else w  # a hair between neighbours
                w = max(3.0 if outcome != OK else 1.0, w)  # failures stay visible
                parts.append(
                    f'<rect class="mpnb-task mpnb-{outcome}" x="{x:.1f}" y="{y + 3}" '
                    f'width="{w:.1f}" height="{_LANE - 6}" fill="{COLOURS[outcome]}">'
                    f"<title>{html.escape(title)}</title></rect>"
                )
                if outcome == CRASHED:
                    parts.append(
                        f'<text class="mpnb-crash" x="{x + w:.1f}" y="{y + 15}" '
                        f'fill="{COLOURS[CRASHED]}" font-weight="bold">✕<title>'
                        f"{html.escape(title)}</title></text>"
                    )
            parts.append("</g>")
        parts.append("</svg>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        summary = "<br>".join(html.escape(line) for line in self.summary().splitlines())
        legend = " ".join(
            f'<span style="color:{colour}">■</span> {name}' for name, colour in COLOURS.items()
        )
        return (
            f'<div class="mpnb-timeline" style="font-size:12px">'
            f'<div class="mpnb-timeline-summary">{summary}</div>'
            f"{self.svg() if self.tasks else ''}"
            f'<div style="color:#666">{legend}</div></div>'
        )

    def text(self, width: int = _TEXT_WIDTH) -> str:
        """The timeline as text: the summary, then a row of marks per lane (``#`` done,
        ``E`` failed, ``X`` worker died, ``c`` cancelled, ``>`` running, ``.`` idle)."""
        lines = [self.summary()]
        if not self.tasks:
            return lines[0]
        span = self.span or 1e-9
        name_width = min(max(len(lane) for lane in self.lanes), 40)
        for lane in self.lanes:
            row = ["."] * width
            spans = []
            for t in self.lane_tasks(lane):
                first = min(width - 1, int((t.start - self.start) / span * width))
                last = min(width - 1, max(first, int((t.end - self.start) / span * width - 1e-9)))
                mark = _TEXT_MARKS[t.outcome]
                spans.append((first, last, mark))
                for i in range(first, last + 1):
                    if row[i] == "." or _MARK_RANK[mark] > _MARK_RANK[row[i]]:
                        row[i] = mark
            # A short failure that shares its column with a worse one (an error just
            # before its worker died) still shows: in the nearest column of plain marks.
            for first, last, mark in spans:
                if mark in "#>" or mark in row[first : last + 1]:
                    continue
                for i in sorted(range(width), key=lambda i: abs(i - first)):
                    if row[i] in ".#>":
                        row[i] = mark
                        break
            lines.append(f"{lane[:name_width].ljust(name_width)} |{''.join(row)}|")
        lines.append(f"{'':{name_width}}  0{_seconds(self.span).rjust(width - 1)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())

    # -- export --------------------------------------------------------------------------
    def chrome_trace(self) -> dict[str, Any]:
        """The records as a Trace Event Format object (see ``to_chrome_trace``)."""
        from .trace import chrome_trace

        return chrome_trace(self)

    def to_chrome_trace(self, path: str | os.PathLike[str]) -> Path:
        """Write the records as JSON that Perfetto and chrome://tracing open; returns
        the path."""
        from .trace import write_chrome_trace

        return write_chrome_trace(self, path)


def last_run() -> Timeline:
    """The timeline of the last run (what the pool that started a run last ran since it
    was last idle: a ``map``, a ``%%mp_pool`` cell, a burst of ``submit``s)."""
    recorder = last_recorder()
    if recorder is None:
        return Timeline([], "no pool has run a task yet")
    return Timeline(recorder.records(recorder.run_from), f"{recorder.name}, last run")


def processes() -> Timeline:
    """The plain processes started so far (not pool workers), a lane each."""
    return Timeline(process_records(), "processes")

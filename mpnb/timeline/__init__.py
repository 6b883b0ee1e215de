"""Who ran what, when: per-task start and end times of pools, executors and processes.

- ``record``: what the engine notes as results arrive (one tuple per task or chunk,
  timestamps the workers already send), the switch (``set_recording``), and the
  lanes of plain ``Process`` objects; imported by the engine, so it imports no
  notebook package;
- ``render``: ``Timeline``, the records of a run as SVG/HTML inline in Jupyter, as
  text in a terminal, with a summary of stragglers and idle gaps;
- ``trace``: a timeline as a Chrome Trace Event file (Perfetto, chrome://tracing).

``pool.timeline()``, ``executor.timeline()``, ``mpnb.timeline.last_run()`` and
``%mp_timeline`` return a ``Timeline``; its ``tasks`` are plain ``TaskRecord``s.
"""

from typing import TYPE_CHECKING, Any

from .record import (
    CANCELLED,
    CRASHED,
    ERROR,
    OK,
    TaskRecord,
    recording,
    set_recording,
)

if TYPE_CHECKING:
    from .render import Timeline, last_run, processes

__all__ = [
    "OK",
    "ERROR",
    "CRASHED",
    "CANCELLED",
    "TaskRecord",
    "Timeline",
    "last_run",
    "processes",
    "recording",
    "set_recording",
]


def __getattr__(name: str) -> Any:
    """``Timeline``, ``last_run`` and ``processes``: the drawing code (``render``, with
    ``statistics`` and ``html``) is imported when first asked for, not by the engine."""
    if name in ("Timeline", "last_run", "processes"):
        from . import render

        return getattr(render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

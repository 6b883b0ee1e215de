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

from .record import (
    CANCELLED,
    CRASHED,
    ERROR,
    OK,
    TaskRecord,
    recording,
    set_recording,
)
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

"""A ``Timeline`` as a Chrome Trace Event Format file (Perfetto, chrome://tracing).

One complete event (``"ph": "X"``) per task, ``ts``/``dur`` in microseconds from the
first task's start; ``pid`` 1 stands for the run, ``tid`` for its lane (a worker), and
a ``thread_name`` metadata event names each lane. ``args`` hold the item(s), the
outcome and the worker's pid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .render import Timeline

__all__ = ["chrome_trace", "write_chrome_trace"]


def chrome_trace(timeline: Timeline) -> dict[str, Any]:
    """The Trace Event Format object of ``timeline``."""
    tids = {lane: index + 1 for index, lane in enumerate(timeline.lanes)}
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": timeline.title}}
    ]
    for lane, tid in tids.items():
        events.append(
            {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": lane}}
        )
        events.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "pid": 1,
                "tid": tid,
                "args": {"sort_index": tid},
            }
        )
    for t in timeline.tasks:
        args: dict[str, Any] = {"outcome": t.outcome, "worker_pid": t.pid, "job": t.job}
        if t.item is not None:
            args["item"] = t.item
            args["items"] = t.count
        if t.errors:
            args["errors"] = t.errors
        if t.exitcode is not None:
            args["exitcode"] = t.exitcode
        events.append(
            {
                "name": t.what,
                "cat": t.outcome,
                "ph": "X",
                "ts": round((t.start - timeline.start) * 1e6, 3),
                "dur": round(t.duration * 1e6, 3),
                "pid": 1,
                "tid": tids[t.lane],
                "args": args,
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(timeline: Timeline, path: str | os.PathLike[str]) -> Path:
    """Write ``chrome_trace(timeline)`` to ``path`` as JSON; returns the path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"to_chrome_trace takes a file path, not {type(path).__name__}")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(
            f"to_chrome_trace: {str(target)!r} is a folder; give a file path such as "
            f"{str(target / 'timeline.json')!r}"
        )
    target.write_text(json.dumps(chrome_trace(timeline)), encoding="utf-8")
    return target

"""Where a cluster task's output goes in the client: the cell that submitted it.

In an IPython kernel the text is published by ``mpnb.output.kernel`` (the same IOPub
``stream`` messages, with the submitting cell's parent header, as a local child's
text), so it lands in that cell even after the cell finished. Elsewhere it is written
to this process's ``sys.stdout``/``sys.stderr``. Each change of source within a cell
and stream is tagged with the worker's address (``[stdout:tcp://10.0.0.5:40123] ``),
as ``mpnb.output.relay`` tags local processes; frames of notebook cells in a traceback
read ``Cell In[n], line k``.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any

from .. import _compat
from ..output import kernel as _kernel
from ..output.tracebacks import relabel

__all__ = ["Publisher"]

_MAX_CELLS = 1024


class Publisher:
    """Publishes text of cluster tasks, tagging each change of source."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple[Any, str], str] = OrderedDict()

    def publish(self, route: Any, stream: str, text: str, worker: str) -> None:
        if stream not in ("stdout", "stderr") or not text:
            return
        text, _ = relabel(text, _compat.running_cell_label, final=True)
        with self._lock:
            key = (route, stream)
            if self._last.get(key) != worker:
                text = f"[{stream}:{worker}] {text}"
            self._last[key] = worker
            self._last.move_to_end(key)
            while len(self._last) > _MAX_CELLS:
                self._last.popitem(last=False)
        side = _kernel.current()
        if side is not None:
            try:
                side.send(route, stream, text)
            except Exception:  # never let output stop the pool
                pass
            return
        target = sys.stdout if stream == "stdout" else sys.stderr
        try:
            target.write(text)
            target.flush()
        except Exception:
            pass

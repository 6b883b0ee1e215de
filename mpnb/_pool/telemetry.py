"""What the monitor and the progress bars hear of a pool's tasks, kept off the hot path.

- The pool's registry record (``REGISTRY.count_pool``): tasks submitted, done and
  failed, gathered in a ``Tally`` under the engine's lock and published at most every
  ``LABEL_INTERVAL``, so a burst of tiny tasks costs one registry update.
- Each worker's registry record: the task it runs (``Label``, turned into text only when
  shown, once the task ran ``LABEL_DELAY``: most tasks end before) and how it ended
  (``record_exit``).
- The timeline (``mpnb.timeline``): each pool's ``Recorder``, to which the engine
  appends one tuple per task result (the worker's start time and seconds, from its
  RESULT message) and one per task whose worker died or was stopped; tasks that ran
  ``LABEL_SECONDS`` or more keep their label. ``mpnb.timeline.set_recording(False)``
  turns it off.
- Progress: the ``on_progress(n)`` hooks of the result objects (``BarHook`` draws the
  bar of ``progress=True``); a hook or callback that raises is reported on stderr,
  never raised into the engine's thread.
"""

from __future__ import annotations

import functools
import sys
import time
import weakref
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any, Protocol, TypeVar

from ..errors import short_repr
from ..registry import REGISTRY
from ..timeline.record import LABEL_SECONDS, Recorder
from .protocol import APPLY, STARMAP

__all__ = [
    "LABEL_DELAY",
    "LABEL_INTERVAL",
    "LABEL_SECONDS",
    "Recorder",
    "SUBMITTED",
    "DONE",
    "FAILED",
    "Progress",
    "func_name",
    "Label",
    "Tally",
    "show_task",
    "record_exit",
    "pool_closed",
    "flush_with",
    "flush_all",
    "BarHook",
    "bar_hook",
    "with_bar",
    "report_progress",
    "Bar",
    "set_bar_factory",
    "report_callback_error",
]

T = TypeVar("T")

# A worker's task shows in the registry (what the monitor reads) once it ran this many
# seconds, then at most every ``LABEL_INTERVAL``: tiny tasks cost no registry update.
# The pool's counts reach the registry at most every ``LABEL_INTERVAL`` too.
LABEL_DELAY = 0.05
LABEL_INTERVAL = 0.1

# The counts of a ``Tally``, by index.
SUBMITTED, DONE, FAILED = 0, 1, 2

# ``on_progress(n)``: ``n`` more items are done.
Progress = Callable[[int], object]


def func_name(func: object) -> str:
    """A function's short name for labels and messages (``square``, ``partial(f)``)."""
    if isinstance(func, functools.partial):
        return f"partial({func_name(func.func)})"
    name = (
        getattr(func, "__qualname__", None)
        or getattr(func, "__name__", None)
        or type(func).__qualname__
    )
    return str(name).rpartition("<locals>.")[2]


class Label:
    """A task's short description (``square(3)``), made when first needed."""

    __slots__ = ("name", "mode", "first", "count", "args", "kwds")

    def __init__(
        self,
        name: str,
        mode: int,
        first: Any = None,
        count: int = 1,
        args: tuple[Any, ...] = (),
        kwds: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.mode, self.first, self.count = name, mode, first, count
        self.args, self.kwds = args, kwds or {}

    def __str__(self) -> str:
        if self.mode == APPLY:
            parts = [short_repr(a) for a in self.args]
            parts += [f"{k}={short_repr(v)}" for k, v in self.kwds.items()]
        elif self.mode == STARMAP and isinstance(self.first, (tuple, list)):
            parts = [short_repr(a) for a in self.first]
        else:
            parts = [short_repr(self.first)]
        text = f"{self.name}({', '.join(parts)})"
        if len(text) > 80:
            text = text[:77] + "..."
        return text + (f" and {self.count - 1} more" if self.count > 1 else "")


class Tally:
    """A pool's tasks submitted, done and failed that the registry has not heard of.

    The engine adds to ``counts[SUBMITTED]``, ``counts[DONE]`` and ``counts[FAILED]``
    directly (a method call per task would cost more than the addition) and calls
    ``take`` under its lock, ``publish`` outside it.
    """

    __slots__ = ("pool", "counts", "due", "__weakref__")

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.counts = [0, 0, 0]  # submitted, done, failed
        self.due = 0.0  # publish when ``time.monotonic()`` reaches this

    def take(self) -> list[int]:
        """The counts so far, reset; the next are due ``LABEL_INTERVAL`` from now."""
        self.due = time.monotonic() + LABEL_INTERVAL
        counts, self.counts = self.counts, [0, 0, 0]
        return counts

    def publish(self, counts: list[int]) -> None:
        submitted, done, failed = counts
        if submitted or done or failed:
            REGISTRY.count_pool(self.pool, submitted=submitted, done=done, failed=failed)


# How to publish each live pool's tally now (``flush_all``): weak both ways, so that
# no pool is kept alive by it.
_flushers: weakref.WeakKeyDictionary[Tally, weakref.WeakMethod[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def flush_with(tally: Tally, flush: Callable[[], None]) -> None:
    """The bound method ``flush()`` publishes ``tally`` (the engine's lock taken):
    ``flush_all`` calls it while both live."""
    _flushers[tally] = weakref.WeakMethod(flush)


def flush_all() -> None:
    """Publish every pool's counts now (the notebook does so as each cell ends, so that
    what the monitor shows then is final)."""
    for ref in list(_flushers.values()):
        flush = ref()
        if flush is not None:
            flush()


def show_task(process: BaseProcess, label: str | None) -> None:
    """The task a worker runs (``None``: idle), in its registry record."""
    key = getattr(process, "_mpnb_key", None)
    if key is not None:
        REGISTRY.update_process(key, task=label)


def record_exit(process: BaseProcess, error: str | None, exitcode: int | None) -> None:
    """A worker exited (``error``: the crash message of the task it ran)."""
    key = getattr(process, "_mpnb_key", None)
    if key is not None:
        REGISTRY.update_process(key, task=None, error=error, exitcode=exitcode)


def pool_closed(pool: str) -> None:
    REGISTRY.update_pool(pool, closed=True)


# -- progress ---------------------------------------------------------------------------


class Bar(Protocol):
    """What ``progress=True`` draws on: ``mpnb.progress.ProgressBar`` is one."""

    total: int | None
    done: int

    def update(self, count: int) -> None: ...
    def close(self, failed: bool = False) -> None: ...


# Makes the bar of ``progress=True`` from ``(total, label)``. The display belongs to the
# notebook layer: ``mpnb/__init__.py`` installs ``mpnb.progress.ProgressBar`` here, so
# the engine draws bars without importing display code.
_bar_factory: Callable[[int | None, str], Bar] | None = None


def set_bar_factory(factory: Callable[[int | None, str], Bar] | None) -> None:
    """Install what draws progress bars (``None``: ``progress=True`` draws nothing)."""
    global _bar_factory
    _bar_factory = factory


class _NoBar:
    total: int | None = None
    done = 0

    def update(self, count: int) -> None:
        self.done += count

    def close(self, failed: bool = False) -> None:
        pass


class BarHook:
    """``on_progress`` that drives a progress bar (``progress=True``)."""

    def __init__(self, total: int | None) -> None:
        factory = _bar_factory
        self.bar: Bar = factory(total, "mpnb.Pool") if factory is not None else _NoBar()
        self.bar.total = total
        self.closed = False

    def __call__(self, count: int) -> None:
        self.bar.update(count)
        if self.bar.total is not None and self.bar.done >= self.bar.total:
            self.close()

    def set_total(self, total: int) -> None:
        """The input's length, learnt once a lazy iterable ran out."""
        self.bar.total = total
        if self.bar.done >= total:
            self.close()

    def close(self, failed: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.bar.close(failed=failed)


def bar_hook(progress: bool, total: int | None) -> BarHook | None:
    """A ``BarHook`` for ``progress=True``, else ``None``."""
    return BarHook(total) if progress else None


def with_bar(progress: bool, run: Callable[[BarHook | None], T], total: int | None) -> T:
    """``run(hook)``; the bar, if any, shows a failure when ``run`` raises."""
    hook = bar_hook(progress, total)
    try:
        return run(hook)
    except BaseException:
        if hook is not None:
            hook.close(failed=True)
        raise


def report_progress(hook: Progress, count: int) -> None:
    """``hook(count)``; an error there is reported, not raised."""
    try:
        hook(count)
    except Exception:
        report_callback_error(hook)


def report_callback_error(callback: object) -> None:
    """Report the exception being handled, raised by a user's ``callback``."""
    import traceback

    print(f"mpnb: the callback {func_name(callback)} raised:", file=sys.stderr)
    traceback.print_exc()

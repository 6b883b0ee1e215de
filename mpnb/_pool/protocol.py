"""What crosses between a pool and its workers, and between an engine and its callers.

The one home of both conversations, so that no two modules can disagree on them.

Pool and worker (one duplex connection per worker). The parent sends, in order:

- ``(FUNC, func_id, func_bytes)``: a function, pickled once per call in the parent;
  the worker keeps the last few by id (``remember``), so chunks carry only data;
- ``(TASK, task_id, func_id, mode, start, stop_on_error, route, payload)``: run the
  function over ``payload`` (``APPLY``: ``(args, kwds)``; ``MAP``/``STARMAP``: a chunk
  of items whose first has index ``start``), output following ``route``;
- ``(STOP,)``: exit.

The worker answers ``(READY,)`` once its initializer ran (``(INIT_FAILED, record)`` if
it raised), then one ``(RESULT, task_id, values, errors, seconds, started)`` per task, in
order: ``errors`` lists ``(offset, ErrorRecord)``, where ``values`` holds ``None``;
``started`` is the task's start on ``time.perf_counter``'s clock (for the timeline).

Each message is one pickle (mpnb's pickler) of a plain tuple whose first item is its
kind; ``*_message`` builds each kind and ``parse_*`` reads its fields. Tuples, not
classes: a class would travel by reference in every message and cost a lookup per task.

Engine and callers (``mpnb.pool``, ``mpnb.futures``): a caller turns calls into ``Task``s
(``tasks.TaskMaker``, in its own thread) for a ``Job`` and submits them; the engine
tells the job what became of them from its own thread, outside its locks: ``deliver``
per task run, ``fail`` per task that could not run (or for the whole job: ``task`` is
``None``), and ``fire`` once, after the first of those that returned True. Jobs are
numbered by the engine (``new_job_id``), in submission order: an interrupt cancels
every job up to the newest. ``PoolCore`` is the local engine; one that runs tasks
elsewhere (a cluster) would take the same ``Task``s and call the same ``Job`` methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .._pickle import dumps, loads, plain_dumps
from ..errors import ErrorRecord

__all__ = [
    "TASK",
    "FUNC",
    "STOP",
    "READY",
    "RESULT",
    "INIT_FAILED",
    "APPLY",
    "MAP",
    "STARMAP",
    "FUNC_CACHE",
    "FUNC_CACHE_BYTES",
    "Message",
    "ResultErrors",
    "remember",
    "func_message",
    "task_message",
    "stop_message",
    "ready_message",
    "init_failed_message",
    "result_message",
    "unloadable_result",
    "read",
    "parse_func",
    "parse_task",
    "parse_result",
    "parse_init_failed",
    "Task",
    "Job",
]

# Parent -> worker.
TASK, FUNC, STOP = 0, 1, 2
# Worker -> parent.
READY, RESULT, INIT_FAILED = 0, 1, 2
# How a task calls its function.
APPLY, MAP, STARMAP = 0, 1, 2

# Functions a worker keeps: at most this many, of at most this many bytes pickled in all
# (the newest always kept), oldest dropped first. The parent applies the same rule to
# the same messages (``remember``), so it knows which functions a worker still has.
FUNC_CACHE = 32
FUNC_CACHE_BYTES = 16 * 2**20

Message = tuple[Any, ...]
# A RESULT's errors, as the worker sends them: ``(offset, record)`` per failed item.
ResultErrors = list[tuple[int, ErrorRecord]]


def remember(cache: dict[int, int], func_id: int, size: int) -> list[int]:
    """Note a function message of ``size`` bytes; returns the ids to forget."""
    cache[func_id] = size
    total = sum(cache.values())
    dropped = []
    while len(cache) > 1 and (len(cache) > FUNC_CACHE or total > FUNC_CACHE_BYTES):
        old = next(iter(cache))
        total -= cache.pop(old)
        dropped.append(old)
    return dropped


# -- building (the sender) --------------------------------------------------------------


def func_message(func_id: int, func_bytes: bytes) -> bytes:
    """``(FUNC, func_id, func_bytes)``, pickled."""
    return bytes(dumps((FUNC, func_id, func_bytes)))


def task_message(
    task_id: int, func_id: int, mode: int, start: int, stop_on_error: bool, route: Any, payload: Any
) -> bytes | memoryview:
    """``(TASK, ...)``, pickled now (raises what pickling ``payload`` or ``route``
    raises). ``payload``: ``(args, kwds)`` for ``APPLY``, else a list of items."""
    return dumps((TASK, task_id, func_id, mode, start, stop_on_error, route, payload))


def plain_task_message(
    task_id: int, func_id: int, mode: int, start: int, stop_on_error: bool, route: Any, payload: Any
) -> bytes | memoryview | None:
    """``task_message`` if everything in it is plain data (the same bytes), else ``None``:
    then use ``task_message``, which may put buffers out of band."""
    return plain_dumps((TASK, task_id, func_id, mode, start, stop_on_error, route, payload))


def stop_message() -> bytes:
    """``(STOP,)``, pickled."""
    return bytes(dumps((STOP,)))


def ready_message() -> bytes | memoryview:
    """``(READY,)``, pickled."""
    return dumps((READY,))


def init_failed_message(record: ErrorRecord) -> bytes | memoryview:
    """``(INIT_FAILED, record)``, pickled."""
    return dumps((INIT_FAILED, record))


def result_message(
    task_id: int | None,
    values: list[Any],
    errors: ResultErrors,
    seconds: float,
    started: float = 0.0,
) -> bytes | memoryview:
    """``(RESULT, task_id, values, errors, seconds, started)``, pickled (raises what
    pickling a value raises). ``task_id`` is ``None`` for a task that could not be
    loaded."""
    return dumps((RESULT, task_id, values, errors, seconds, started))


def unloadable_result(exc: BaseException) -> Message:
    """What the parent reads in place of a message it cannot load: a RESULT whose
    ``errors`` is the exception (see ``parse_result``)."""
    return (RESULT, None, [], exc, 0.0, 0.0)


# -- reading (the receiver) -------------------------------------------------------------


def read(data: bytes | memoryview) -> Message:
    """A message received whole; its kind is ``message[0]``."""
    return loads(data)


def parse_func(msg: Message) -> tuple[int, bytes]:
    """``(func_id, func_bytes)`` of a FUNC."""
    return msg[1], msg[2]


def parse_task(msg: Message) -> tuple[int, int, int, int, bool, Any, Any]:
    """``(task_id, func_id, mode, start, stop_on_error, route, payload)`` of a TASK."""
    return msg[1:]


def parse_result(
    msg: Message,
) -> tuple[list[Any], ResultErrors | BaseException, float, float]:
    """``(values, errors, seconds, started)`` of a RESULT, read in order of the tasks
    sent; ``errors`` is an exception where the parent could not load the message;
    ``started``: ``time.perf_counter()`` in the worker as the task started (0.0:
    unknown)."""
    return msg[2], msg[3], msg[4], msg[5]


def parse_init_failed(msg: Message) -> ErrorRecord:
    """The initializer's error of an INIT_FAILED."""
    return msg[1]


# -- the engine's interface -------------------------------------------------------------


class Task:
    """One message for a worker: an apply call or a chunk of a map, already pickled.

    ``data`` is its TASK message, ``func_msg`` the FUNC message of its function (sent
    first to a worker that lacks it). ``label`` (``square(3)``) is made from what was
    given, by ``str()``, when first needed: most tasks end before anyone asks. ``claim``,
    if given, is called (engine lock held) before each send: ``False`` drops the task
    (a future cancelled meanwhile).
    """

    __slots__ = (
        "job",
        "id",
        "func_id",
        "func_msg",
        "data",
        "mode",
        "start",
        "count",
        "_label",
        "size",
        "func_name",
        "claim",
    )

    def __init__(
        self,
        job: Job,
        task_id: int,
        func_id: int,
        func_msg: bytes,
        data: bytes | memoryview,
        mode: int,
        start: int,
        count: int,
        label: object,
        func_name: str = "",
        claim: Callable[[], bool] | None = None,
    ) -> None:
        self.job = job
        self.id = task_id
        self.func_id = func_id
        self.func_msg = func_msg
        self.data = data
        self.mode = mode
        self.start = start
        self.count = count
        self._label = label
        self.size = len(data)
        self.func_name = func_name
        self.claim = claim

    @property
    def label(self) -> str:
        label = self._label
        if not isinstance(label, str):
            label = self._label = str(label)
        return label


class Job(Protocol):
    """What an engine tells of a job's tasks (see the module docstring).

    Called from the engine's thread, never with its lock held, one call at a time.
    """

    id: int  # from the engine's ``new_job_id()``
    settled: bool  # the job has its outcome: the engine drops its tasks not yet sent

    def deliver(
        self, task: Task, values: list[Any], errors: list[tuple[int, BaseException]]
    ) -> bool:
        """``task`` ran: ``values`` in item order (``None`` where an item failed, fewer
        than ``task.count`` where it stopped at an error), ``errors`` as ``(offset,
        exception)``. True when the job has its outcome (``fire`` follows)."""
        ...

    def fail(self, exc: BaseException, task: Task | None) -> bool:
        """``task`` could not run (its worker died), or, with ``task`` ``None``, the
        whole job ends with ``exc`` (cancelled, the pool broken). True as ``deliver``."""
        ...

    def fire(self) -> None:
        """The job has its outcome: run its callbacks, wake who waits for it."""
        ...

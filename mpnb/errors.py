"""Errors of pools and processes, and how an exception travels back from a worker.

- ``WorkerCrashedError``: a worker died while it ran a task (``os._exit``, a signal,
  the out-of-memory killer); says which worker, its exit code or signal, and which task.
- ``InitializerError``: the pool's initializer failed, so the pool cannot run tasks.
- ``TaskSerializationError``: a task's result or exception could not be sent back.
- ``TaskCancelledError``: a task was cancelled (an interrupt, ``terminate()``).
- ``PoolTimeoutError``: a wait on a pool ran out of time; both
  ``multiprocessing.TimeoutError`` and the builtin ``TimeoutError``.
- ``RemoteTraceback``: the frames of an exception raised in a worker, set as its
  ``__cause__`` in the parent and rendered there, with the parent's source lines (cells
  of a notebook included).

A worker turns an exception into an *error record* (``capture``), plain data that always
pickles; the parent turns it back into the exception (``rebuild``), with the original
type where it can be unpickled and a ``TaskSerializationError`` naming the type where not.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import linecache
import multiprocessing
import multiprocessing.pool as _std_pool
import pickle
import reprlib
import traceback
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _compat
from ._pickle import SerializationError, describe_unpicklable, dumps
from .registry import signal_name

__all__ = [
    "WorkerCrashedError",
    "InitializerError",
    "TaskSerializationError",
    "TaskCancelledError",
    "PoolTimeoutError",
    "RemoteTraceback",
    "ErrorRecord",
    "capture",
    "rebuild",
    "short_repr",
    "frames_of",
    "crash_message",
]

# Longest repr of an argument or result quoted in a message.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2

# What a signal that ended a worker usually means, and what to do about it.
_SIGNAL_HINTS = {
    "SIGKILL": "SIGKILL usually comes from the out-of-memory killer: the task needed more "
    "memory than was free. Use fewer processes, smaller chunks or less memory "
    "per task",
    "SIGSEGV": "a segmentation fault is a bug in compiled code the task called (a C "
    "extension, ctypes)",
    "SIGBUS": "a bus error is a bug in compiled code the task called, or a memory-mapped "
    "file that shrank",
    "SIGABRT": "compiled code the task called aborted (a failed assertion in a C library)",
    "SIGFPE": "compiled code the task called divided by zero",
    "SIGILL": "compiled code the task called used an instruction this CPU lacks",
    "SIGTERM": "something outside the pool terminated it",
}


def short_repr(obj: Any) -> str:
    """A repr of ``obj`` short enough for a message; never raises."""
    try:
        return _REPR.repr(obj)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{type(obj).__qualname__} object>"


# -- the errors -------------------------------------------------------------------------


class WorkerCrashedError(RuntimeError):
    """A pool worker died while it ran a task; the pool replaced it.

    ``worker`` (name), ``pid``, ``exitcode``, ``signal`` (``'SIGKILL'``, or ``''``),
    ``task`` (``'square(3)'``) and ``index`` (of the item in a map, or ``None``).
    """

    def __init__(
        self,
        message: str,
        *,
        worker: str = "",
        pid: int | None = None,
        exitcode: int | None = None,
        task: str = "",
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.worker = worker
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal_name(exitcode)
        self.task = task
        self.index = index


class InitializerError(RuntimeError):
    """The pool's initializer failed in a worker; the pool runs no task.

    The initializer's own exception is the ``__cause__``.
    """


if TYPE_CHECKING:

    class _MaybeEncodingError(Exception):
        """``multiprocessing.pool.MaybeEncodingError``, which typeshed leaves out."""

        exc: str
        value: str

        def __init__(self, exc: object, value: object) -> None: ...
else:
    _MaybeEncodingError = _std_pool.MaybeEncodingError


class TaskSerializationError(SerializationError, _MaybeEncodingError):
    """A task's result or exception could not be sent back to the parent.

    ``what`` is ``'result'`` or ``'exception'``; ``obj_type`` the type that failed. A
    ``multiprocessing.pool.MaybeEncodingError`` too, with its ``exc`` (why) and
    ``value`` (a short repr of what failed), so ``except`` clauses written for the
    standard library catch it.
    """

    def __init__(
        self, message: str, path: str = "", obj_type: str = "", what: str = "", value: str = ""
    ) -> None:
        super().__init__(message, path=path, obj_type=obj_type)
        self.what = what
        self.exc = message
        self.value = value or obj_type

    __str__ = BaseException.__str__
    __repr__ = BaseException.__repr__

    @classmethod
    def of_result(cls, value: Any, item: int | None) -> TaskSerializationError:
        """The error for a result that cannot be sent back: ``value``, the result of
        ``item`` (``None``: of an apply call), named down to the part that fails."""
        root = "the result" if item is None else f"the result of item {item}"
        problem = describe_unpicklable(value, root)
        return cls(
            str(problem),
            path=problem.path,
            obj_type=problem.obj_type,
            what="result",
            value=short_repr(value),
        )


class TaskCancelledError(concurrent.futures.CancelledError):
    """A task was cancelled before it finished (an interrupt, ``Pool.terminate()``)."""


class PoolTimeoutError(multiprocessing.TimeoutError, builtins.TimeoutError):
    """A wait on a pool ran out of time (``AsyncResult.get(timeout)``, ``%%mp_pool
    --timeout``): ``except multiprocessing.TimeoutError`` and ``except TimeoutError``
    both catch it."""


class Frame(NamedTuple):
    """One frame of a remote traceback; ``line`` is the worker's copy of the source."""

    filename: str
    lineno: int
    name: str
    line: str


class RemoteTraceback(Exception):
    """Where an exception was raised in a worker, as frames.

    Set as the ``__cause__`` of the exception re-raised in the parent. Rendering
    happens in the parent: source lines come from the parent's ``linecache`` first, so
    functions defined in notebook cells show their source (a worker has no copy of it),
    and cell frames read ``Cell In[n], line k`` as in IPython's own tracebacks.
    """

    def __init__(
        self,
        frames: list[Frame] | list[tuple[str, int, str, str]],
        header: str = "",
        exc_line: str = "",
        chain: str = "",
    ) -> None:
        super().__init__(header)
        self.frames = [Frame(*f) for f in frames]
        self.header = header
        self.exc_line = exc_line
        self.chain = chain

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.frames, self.header, self.exc_line, self.chain)

    def render(self) -> list[str]:
        """The traceback as lines (each ending with a newline)."""
        lines = [self.chain] if self.chain else []
        lines.append(f"Traceback (most recent call last){self.header}:\n")
        for frame in self.frames:
            lines.append(f"  {_location(frame.filename, frame.lineno)}, in {frame.name}\n")
            source = linecache.getline(frame.filename, frame.lineno).strip() or frame.line
            if source:
                lines.append(f"    {source.strip()}\n")
        if self.exc_line:
            lines.append(self.exc_line + "\n")
        return lines

    @property
    def tb(self) -> str:
        """The traceback as text, as ``multiprocessing.pool.RemoteTraceback.tb``."""
        return "".join(self.render())

    def _render_traceback_(self) -> list[str]:
        """IPython's hook: the lines to show for this exception."""
        return [line.rstrip("\n") for line in self.render()]

    def __str__(self) -> str:
        return "\n" + "".join(self.render()).rstrip("\n")


def _location(filename: str, lineno: int) -> str:
    """``Cell In[3], line 2`` for a notebook cell, ``File "...", line 2`` otherwise."""
    named = _compat.running_cell_label(filename)
    if named:
        return f"{named}, line {lineno}"
    return f'File "{filename}", line {lineno}'


# -- crossing the process boundary ------------------------------------------------------


class ErrorRecord(NamedTuple):
    """An exception raised in a worker, as data that always pickles."""

    data: bytes | None  # the exception pickled by mpnb, None if it cannot be
    type_name: str  # module.qualname of its type
    exc_line: str  # 'ZeroDivisionError: division by zero'
    frames: list[tuple[str, int, str, str]]
    chain: str  # the worker's text of chained exceptions ('' if none)
    reason: str  # why ``data`` is None
    item: str  # short repr of the item that failed ('' if not a map)


def frames_of(
    exc: BaseException, *, skip: str = "", drop: int = 0
) -> list[tuple[str, int, str, str]]:
    """The frames of ``exc``'s traceback as plain data, without the first ``drop`` and
    those of the file ``skip`` (the machinery's own, not the user's)."""
    return [
        (f.filename, f.lineno or 0, f.name, f.line or "")
        for f in traceback.extract_tb(exc.__traceback__)[drop:]
        if f.filename != skip
    ]


def capture(
    exc: BaseException, *, skip: str = "", item: Any = None, has_item: bool = False
) -> ErrorRecord:
    """Turn ``exc`` into an ``ErrorRecord``; frames from the file ``skip`` are left out."""
    frames = frames_of(exc, skip=skip)
    exc_line = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")
    chain = ""
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None:
        link = (
            "The above exception was the direct cause of the following exception:"
            if exc.__cause__ is not None
            else "During handling of the above exception, another exception occurred:"
        )
        chain = "".join(traceback.format_exception(cause)) + f"\n{link}\n\n"
    data: bytes | None = None
    reason = ""
    try:
        data = bytes(dumps(exc))
        pickle.loads(data)  # an exception class whose __init__ needs other arguments
    except Exception as problem:  # whatever it is, say it
        data, reason = None, f"{type(problem).__name__}: {problem}"
    kind = type(exc)
    return ErrorRecord(
        data,
        f"{kind.__module__}.{kind.__qualname__}",
        exc_line,
        frames,
        chain,
        reason,
        short_repr(item) if has_item else "",
    )


def rebuild(
    record: ErrorRecord | tuple[Any, ...],
    worker: str,
    task: str = "",
    index: int | None = None,
    func: str = "",
) -> BaseException:
    """The exception behind ``record``, with its ``RemoteTraceback`` as ``__cause__``.

    ``worker`` and ``task`` (or, for an item of a map, ``index`` and ``func``) say where
    it was raised: in the traceback's header and in a note added to the exception
    (Python 3.11+), so that its own message stays the original.
    """
    record = ErrorRecord(*record)
    if index is not None:
        what = f"item {index} of the map" + (f", {func}({record.item})" if func else "")
    else:
        what = f"running {task}" if task else ""
    where = f"pool worker {worker}" + (f", {what}" if what else "")
    header = f", in {where}"
    note = f"(raised in {where})"
    remote = RemoteTraceback(record.frames, header, record.exc_line, record.chain)
    exc: BaseException | None = None
    reason = record.reason
    if record.data is not None:
        try:
            exc = pickle.loads(record.data)
        except Exception as problem:  # fall back to the stand-in
            reason = f"{type(problem).__name__}: {problem}"
    if not isinstance(exc, BaseException):
        exc = TaskSerializationError(
            f"the task raised {record.type_name} ({record.exc_line}), an exception that "
            f"cannot be sent back to this process: {reason}. Its traceback in the worker "
            f"is above. Raise an exception that pickles: one whose __init__ accepts its "
            f"own args, or that defines __reduce__",
            obj_type=record.type_name,
            what="exception",
        )
    exc.__cause__ = remote
    if note and hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def crash_message(
    worker: str, pid: int | None, exitcode: int | None, task: str, index: int | None, item: str = ""
) -> str:
    """What to tell a user whose task killed its worker."""
    sig = signal_name(exitcode)
    if sig:
        how = f"was killed by {sig}"
        hint = _SIGNAL_HINTS.get(sig, "")
    elif exitcode is None:
        how, hint = "died (exit code unknown)", ""
    else:
        how = f"exited with code {exitcode}"
        hint = (
            "the task (or a library it called) ended the process, with os._exit(), "
            "sys.exit() or a C-level exit()"
        )
    what = f"while running {task}" if task else "while running a task"
    if index is not None:
        what += f" (item {index}" + (f": {item}" if item else "") + ")"
    hint = f" {hint[0].upper()}{hint[1:]}." if hint else ""
    return (
        f"worker {worker} (pid {pid}) {how} {what}.{hint} "
        f"The pool replaced the worker; other tasks go on."
    )

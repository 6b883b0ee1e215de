"""The loop a pool worker runs (the child's side of ``protocol``).

The worker reads its connection one message at a time: it keeps the functions it is
sent (``protocol.remember`` says which it drops, as the parent computes it too) and runs
each task over its payload, answering one RESULT per task, in order. What a task
returns that cannot be pickled fails that item (``TaskSerializationError``, naming the
type), not the worker.

Two words of shared memory per worker tell the parent, if the worker dies, which task
and which item it was running: the worker writes them before it runs each (for items
of a function that takes under ``FAST_ITEM_SECONDS``, the start of the chunk instead,
as ``-1 - start``).

The worker ignores SIGINT (an interrupt in a notebook is the parent's to handle: it
stops the busy workers itself) and exits when the pool's owner process dies.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .. import _routing
from .._pickle import PICKLING_ERRORS, fails, loads
from ..errors import ErrorRecord, TaskSerializationError, capture
from .initializer import Initializer
from .protocol import (
    APPLY,
    FUNC,
    STARMAP,
    STOP,
    ResultErrors,
    init_failed_message,
    parse_func,
    parse_task,
    read,
    ready_message,
    remember,
    result_message,
)

__all__ = ["run", "FAST_ITEM_SECONDS"]

# Items quicker than this run through ``map`` without writing their index to shared
# memory first (that write costs ~30 ns an item); the first chunk of each function
# always writes it, and times the function.
FAST_ITEM_SECONDS = 5e-6

# Seconds between two checks that the owner is alive, where pidfd_open is missing.
_OWNER_POLL = 1.0

# Frames of this file are the pool's, not the user's: left out of remote tracebacks.
_HERE = __file__


def run(
    conn: Connection,
    state: Any,
    slot: int,
    init: Initializer | None,
    maxtasks: int | None,
    owner: int,
) -> None:
    """The target of a pool worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_owner(owner)
    words = memoryview(state).cast("B").cast("q")
    task_word, item_word = 2 * slot, 2 * slot + 1
    if init is not None:
        try:
            initializer, initargs = init.load()
            initializer(*initargs)
        except Exception as exc:
            conn.send_bytes(init_failed_message(capture(exc, skip=_HERE)))
            return
    conn.send_bytes(ready_message())
    funcs: dict[int, tuple[bool, Any]] = {}
    sizes: dict[int, int] = {}
    item_seconds: dict[int, float] = {}
    done = 0
    while maxtasks is None or done < maxtasks:
        try:
            data: bytes | memoryview = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            msg = read(data)
        except Exception as exc:
            record = capture(exc, skip=_HERE)
            conn.send_bytes(result_message(None, [None], [(0, record)], 0.0, time.perf_counter()))
            done += 1
            continue
        kind = msg[0]
        if kind == FUNC:
            func_id, func_bytes = parse_func(msg)
            for old in remember(sizes, func_id, len(data)):
                funcs.pop(old, None)
                item_seconds.pop(old, None)
            try:
                funcs[func_id] = (True, loads(func_bytes))
            except Exception as exc:
                funcs[func_id] = (False, capture(exc, skip=_HERE))
            continue
        if kind == STOP:
            return
        task_id, func_id, mode, start, stop_on_error, route, payload = parse_task(msg)
        words[task_word] = task_id
        words[item_word] = start
        t0 = time.perf_counter()
        entry: tuple[bool, Any] = funcs.get(func_id) or (False, _missing(func_id))
        loaded, func = entry
        _routing.enter(route)
        try:
            if not loaded:
                count = 1 if mode == APPLY else len(payload)
                values, errors = [None] * count, [(0, func)]
            elif mode == APPLY:
                values, errors = _apply(func, payload)
            else:
                fast = item_seconds.get(func_id, 1.0) < FAST_ITEM_SECONDS
                values, errors = _map(
                    func, payload, mode == STARMAP, start, stop_on_error, words, item_word, fast
                )
        finally:
            _routing.leave()
        seconds = time.perf_counter() - t0
        if mode != APPLY and payload:
            item_seconds[func_id] = seconds / len(payload)
        try:
            data = result_message(task_id, values, errors, seconds, t0)
        except PICKLING_ERRORS:
            values, errors = _sendable(
                values, errors, start if mode != APPLY else None, stop_on_error
            )
            data = result_message(task_id, values, errors, seconds, t0)
        conn.send_bytes(data)
        done += 1
        # Let go of the task's arguments and results now, not at the next task: an idle
        # worker must not keep an array (or its shared-memory segment) alive.
        del msg, payload, values, errors, data


def _missing(func_id: int) -> ErrorRecord:
    try:
        raise RuntimeError(f"mpnb: this worker lost function {func_id} (a bug in mpnb)")
    except RuntimeError as exc:
        return capture(exc, skip=_HERE)


def _apply(
    func: Callable[..., Any], payload: tuple[tuple[Any, ...], dict[str, Any]]
) -> tuple[list[Any], ResultErrors]:
    args, kwds = payload
    try:
        return [func(*args, **kwds)], []
    except Exception as exc:
        return [None], [(0, capture(exc, skip=_HERE))]


def _map(
    func: Callable[..., Any],
    items: list[Any],
    star: bool,
    start: int,
    stop_on_error: bool,
    words: memoryview,
    item_word: int,
    fast: bool,
) -> tuple[list[Any], ResultErrors]:
    values: list[Any] = []
    errors: ResultErrors = []
    if fast:
        words[item_word] = -1 - start
        rest = iter(items)
        while True:
            try:  # list.extend keeps what it got before an exception
                values.extend(itertools.starmap(func, rest) if star else map(func, rest))
                return values, errors
            except Exception as exc:
                offset = len(values)
                errors.append((offset, capture(exc, skip=_HERE, item=items[offset], has_item=True)))
                if stop_on_error:
                    return values, errors
                values.append(None)
    append = values.append
    index = start
    for item in items:
        words[item_word] = index
        try:
            append(func(*item) if star else func(item))
        except Exception as exc:
            errors.append((index - start, capture(exc, skip=_HERE, item=item, has_item=True)))
            if stop_on_error:
                break
            append(None)
        index += 1
    return values, errors


def _sendable(
    values: list[Any], errors: ResultErrors, start: int | None, stop_on_error: bool
) -> tuple[list[Any], ResultErrors]:
    """Replace each result that cannot be pickled by an error naming its type."""
    failed = dict(errors)
    out: list[Any] = []
    for offset, value in enumerate(values):
        if offset in failed or fails(value) is None:
            out.append(value)
            continue
        exc = TaskSerializationError.of_result(value, None if start is None else start + offset)
        failed[offset] = capture(exc, skip=_HERE)
        out.append(None)
        if stop_on_error:
            break
    return out, sorted(failed.items())


def _watch_owner(owner: int) -> None:
    """Exit at once if the process that owns the pool dies (a killed kernel)."""
    if sys.platform == "win32":  # os.kill(pid, 0) would end the owner there
        return

    def watch() -> None:
        try:
            fd = os.pidfd_open(owner)
        except ProcessLookupError:
            os._exit(1)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
            os._exit(1)
        while True:
            time.sleep(_OWNER_POLL)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(1)
            except OSError:
                pass

    threading.Thread(target=watch, name="mpnb-owner-watch", daemon=True).start()

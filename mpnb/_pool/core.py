"""The local engine of a pool (``PoolCore``): its workers, the tasks waiting for them,
and the thread that watches both.

Each worker has its own duplex connection, so the core always knows what each worker
runs: the oldest task it sent a worker and has no result for yet. Tasks arrive already
pickled (``tasks.TaskMaker`` pickles them in the caller's thread) and are sent to a
worker as soon as one can take them, by whichever thread has the lock: the caller's
when a worker is idle (no thread hop), the manager's when a result frees one.

The manager thread waits on every worker's connection and sentinel and on a wake-up
pipe (``multiprocessing.connection.wait``). A result goes to its job; a sentinel means
the worker exited: what it had sent is read first, then the task it was running (the
shared words the worker writes tell which, and which item) fails with a
``WorkerCrashedError``, tasks queued behind it go back to the queue, and a new worker
takes its slot. Nothing waits without a way to be woken, so nothing hangs.

Prefetch: a worker may hold more than one task only when tasks of that function have
been quick (under ``PREFETCH_SECONDS`` of work queued) and what it has not read yet
fits in half its pipe's buffer (so a send to a busy worker never blocks, and neither
side can wait on the other); slow tasks go one at a time, so work stays balanced.

Jobs (``results.ApplyResult`` and friends, ``executor_jobs.FutureJob``) are told of results
by the manager thread only, outside the lock, through the ``protocol.Job`` interface:
``deliver``/``fail``, then ``fire`` once a job is done. A task may carry ``claim``,
called (lock held) before each send: ``False`` drops the task (a future cancelled
meanwhile). The messages exchanged with workers are built and read by ``protocol``;
what the monitor hears of tasks goes through ``telemetry``, and so does the timeline:
one tuple per result appended to ``recorder`` (the worker's start time rides on its
RESULT message).

A ``KeyboardInterrupt`` while a caller waits on the pool (or submits to it) cancels
every job submitted so far: callers wrap such code in ``with core.interrupting():``.
"""

from __future__ import annotations

import itertools
import os
import selectors
import threading
import time
import traceback
from collections import deque
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import RawArray
from types import TracebackType
from typing import Any, Protocol

from .. import _routing, shutdown
from ..errors import (
    ErrorRecord,
    InitializerError,
    TaskCancelledError,
    TaskSerializationError,
    WorkerCrashedError,
    crash_message,
    rebuild,
)
from . import telemetry, worker
from .frames import FAST, FrameReader, send_frames
from .initializer import Initializer
from .protocol import (
    APPLY,
    INIT_FAILED,
    READY,
    RESULT,
    Job,
    ResultErrors,
    Task,
    func_message,
    parse_init_failed,
    parse_result,
    read,
    remember,
    stop_message,
    unloadable_result,
)
from .telemetry import (
    DONE,
    FAILED,
    LABEL_DELAY,
    LABEL_INTERVAL,
    LABEL_SECONDS,
    SUBMITTED,
    Recorder,
    Tally,
)

__all__ = ["PoolCore", "Interrupting", "RUN", "CLOSE", "TERMINATE", "cpu_count"]

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

# Seconds a worker told to stop (SIGTERM) gets before it is killed.
KILL_GRACE = 1.0
# Workers that die before they are ready, in a row, before the pool gives up.
MAX_START_FAILURES = 3
# Seconds before starting a worker again after a start raised.
START_RETRY = 0.2
# A worker holds at most this many tasks.
MAX_OUTSTANDING = 32
# A worker holding this many sent tasks gets the next ones later, together (when a
# result comes back, or once ``BATCH`` wait): it has work meanwhile.
HELD = 2
BATCH = 16
# What one message costs in a pipe's buffer beyond its bytes (Linux: ~770 bytes of
# bookkeeping per write), and the buffer assumed where it cannot be asked.
WRITE_COST = 1024
DEFAULT_PIPE_BUFFER = 8 * 1024
# Queue at most this many seconds of work in a worker (by the function's recent times).
PREFETCH_SECONDS = 0.005
# Functions remembered for "already pickled, same bytes": a new id per new pickle, and
# none for a big one (a closure over an array), so as not to keep copies of it.
FUNC_IDS = 256
FUNC_ID_BYTES = 64 * 1024

_exitcode_of = BaseProcess.exitcode.fget  # type: ignore[attr-defined]


def cpu_count() -> int:
    """The CPUs this process may use: the default number of workers."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


class _Worker:
    __slots__ = (
        "process",
        "conn",
        "reader",
        "outbox",
        "unsent",
        "slot",
        "sentinel",
        "outstanding",
        "queued",
        "charges",
        "funcs",
        "ready",
        "sent",
        "stop_sent",
        "stopping",
        "kill_at",
        "eof",
        "unsendable",
        "label",
        "label_due",
        "lane",
    )

    def __init__(self, process: BaseProcess, conn: connection.Connection, slot: int) -> None:
        self.process = process
        self.conn = conn
        self.reader = FrameReader(conn)
        self.outbox: list[bytes | memoryview] = []  # to send (``PoolCore._flush``)
        self.unsent = 0  # tasks in ``outbox`` (also in ``outstanding``)
        self.slot = slot
        self.sentinel = process.sentinel
        self.outstanding: deque[Task] = deque()
        self.queued = 0  # buffer the tasks in ``outstanding`` took
        self.charges: deque[int] = deque()  # what each of them took
        self.funcs: dict[int, int] = {}  # functions the worker holds: id -> message size
        self.ready = False  # its initializer ran
        self.sent = 0  # tasks sent (for maxtasksperchild)
        self.stop_sent = False  # asked to exit when idle
        self.stopping = False  # terminated; killed at ``kill_at``
        self.kill_at = 0.0
        self.eof = False  # nothing more to read from it
        self.unsendable = False  # a send to it failed: it is dying
        self.label: str | None = None  # the task the registry shows
        self.label_due = 0.0  # when to show the current task (0: nothing to do)
        self.lane = 0  # its lane in the timeline (``Recorder.worker_started``)

    @property
    def name(self) -> str:
        return f"{self.process.name} (pid {self.process.pid})"


class PoolCore:
    """Workers, queue and manager thread of one pool (see the module docstring)."""

    def __init__(
        self,
        ctx: Any,
        processes: int,
        init: Initializer | None,
        initializer_name: str,
        maxtasks: int | None,
        name: str,
    ) -> None:
        self.name = name
        self.processes = processes
        self.state = RUN
        self.broken: BaseException | None = None
        self.finished = threading.Event()
        self._ctx = ctx
        self._init = init
        self._initializer_name = initializer_name
        self._maxtasks = maxtasks
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._pending: deque[Task] = deque()
        self._jobs: dict[int, Job] = {}
        self._workers: list[_Worker] = []
        self._free_slots = list(range(processes - 1, -1, -1))
        self._array = RawArray("q", 2 * processes)
        self._words = memoryview(self._array).cast("B").cast("q")
        self._job_ids = itertools.count(1)
        self._task_ids = itertools.count(1)
        self._last_job = 0
        self._cancel_upto = 0
        self._cancelled_upto = 0
        self._func_ids: dict[bytes, tuple[int, bytes]] = {}
        self._func_counter = itertools.count(1)
        self._task_seconds: dict[int, float] = {}
        self._start_failures = 0
        self._start_after = 0.0
        self._kill_now = False
        self._budget = 0  # bytes a worker may have unread in its pipe
        self._tally = Tally(name)  # counts not yet in the registry
        telemetry.flush_with(self._tally, self._flush_counts)
        self.recorder = Recorder(name)  # the tasks' times, for the timeline
        self._interrupting = Interrupting(self)
        self._wake_r, self._wake_w = connection.Pipe(duplex=False)
        self._woken = False
        self._sleeping = False  # the manager waits with no deadline
        self._watch = _Watch()
        self._watch.add(self._wake_r, (_WAKE, None))
        self._thread: threading.Thread | None = None
        try:
            for _ in range(processes):
                self._start_worker()
        except BaseException:
            self._kill_all()
            self._close_fds()
            raise
        shutdown.track(self)
        self._thread = threading.Thread(target=self._run, name=f"mpnb-{name}", daemon=True)
        self._thread.start()

    # -- called from the pool (any thread) ------------------------------------------------

    def workers(self) -> list[BaseProcess]:
        return [w.process for w in list(self._workers)]

    def new_job_id(self) -> int:
        return next(self._job_ids)

    def new_task_id(self) -> int:
        return next(self._task_ids)

    def function(self, func_bytes: bytes) -> tuple[int, bytes]:
        """``(func_id, FUNC message)`` for a pickled function; equal bytes, same id."""
        with self._lock:
            known = self._func_ids.get(func_bytes)
            if known is None:
                func_id = next(self._func_counter)
                known = (func_id, func_message(func_id, func_bytes))
                if len(func_bytes) <= FUNC_ID_BYTES:
                    self._func_ids[func_bytes] = known
                    if len(self._func_ids) > FUNC_IDS:
                        del self._func_ids[next(iter(self._func_ids))]
                if len(self._task_seconds) > FUNC_IDS:
                    del self._task_seconds[next(iter(self._task_seconds))]
            return known

    def submit(self, job: Job, tasks: list[Task], *, internal: bool = False) -> None:
        """Queue ``tasks`` of ``job`` (all or none) and send what workers can take."""
        with self._lock:
            self._check_state(internal)
            if not self._jobs:
                self.recorder.new_run(job.id)
            self._jobs[job.id] = job
            self._last_job = max(self._last_job, job.id)
            self._pending.extend(tasks)
            self._dispatch_locked()
            self._tally.counts[SUBMITTED] += sum(t.count for t in tasks)
        if time.monotonic() >= self._tally.due:
            self._flush_counts()

    def check(self, *, internal: bool = False) -> None:
        """Raise if the pool takes no new work."""
        if os.getpid() != self._owner:
            raise RuntimeError(
                f"{self.name} belongs to process {self._owner}: a forked "
                f"child cannot use its parent's pool; make a new one there"
            )
        self._check_state(internal)

    def _check_state(self, internal: bool) -> None:
        if self.broken is not None:
            raise _fresh(self.broken)
        if self.state == TERMINATE or (self.state == CLOSE and not internal):
            raise ValueError("Pool not running")

    def drop_done(self) -> None:
        """Drop the queued tasks of jobs that ended outside the core (cancelled futures)."""
        with self._lock:
            kept = deque(t for t in self._pending if not t.job.settled)
            self._tally.counts[FAILED] += sum(t.count for t in self._pending) - sum(
                t.count for t in kept
            )
            self._pending = kept
        self._wake()

    def finish_job(self, job: Job) -> None:
        """Forget a job that ended outside a delivery (an iterator's input ran out)."""
        with self._lock:
            self._jobs.pop(job.id, None)

    def interrupt(self) -> None:
        """Cancel every job submitted so far and stop the workers running them.

        Returns at once (safe in a ``KeyboardInterrupt`` handler): the queued tasks are
        dropped here, so that no worker starts one; the manager thread fails the jobs
        and stops the busy workers.
        """
        with self._lock:
            self._cancel_upto = upto = max(self._cancel_upto, self._last_job)
            kept = deque(t for t in self._pending if t.job.id > upto)
            self._tally.counts[FAILED] += sum(t.count for t in self._pending) - sum(
                t.count for t in kept
            )
            self._pending = kept
        self._wake()

    def interrupting(self) -> Interrupting:
        """A context manager: a ``KeyboardInterrupt`` raised in it calls ``interrupt()``
        and goes on (``with core.interrupting(): result.wait()``)."""
        return self._interrupting

    def close(self) -> None:
        if self.state == RUN:
            self.state = CLOSE
            self._wake()

    def request_terminate(self) -> None:
        """``terminate`` without waiting."""
        self.state = TERMINATE
        self._wake()

    def terminate(self, timeout: float | None = None, *, kill: bool = False) -> None:
        """Cancel everything, stop every worker (SIGTERM, then SIGKILL; ``kill``:
        SIGKILL at once), wait for it."""
        if kill:
            self._kill_now = True
        self.state = TERMINATE
        thread = self._thread
        if thread is None or threading.current_thread() is thread:
            if thread is None:
                self._kill_all()
            self._wake()
            return
        self._wake()
        if not thread.is_alive():
            self._kill_all()
            return
        if not self.finished.wait(KILL_GRACE * 5 if timeout is None else timeout):
            self._kill_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker exited and the manager thread ended."""
        if self._thread is None or threading.current_thread() is self._thread:
            return self.finished.is_set()
        return self.finished.wait(timeout)

    # -- worker processes -----------------------------------------------------------------

    def _start_worker(self) -> None:
        slot = self._free_slots.pop()
        self._words[2 * slot] = self._words[2 * slot + 1] = 0
        parent_end, child_end = connection.Pipe()
        try:
            process = self._ctx.Process(
                target=worker.run,
                daemon=True,
                args=(child_end, self._array, slot, self._init, self._maxtasks, self._owner),
            )
            process.name = process.name.replace("Process", "PoolWorker")
            process._mpnb_pool = self.name
            process.start()
        except BaseException:
            self._free_slots.append(slot)
            parent_end.close()
            raise
        finally:
            child_end.close()
        w = _Worker(process, parent_end, slot)
        w.lane = self.recorder.worker_started(process, slot)
        if not self._budget:
            self._budget = _pipe_buffer(parent_end) // 2
        with self._lock:
            self._workers.append(w)
        self._watch.add(parent_end, (_RESULT, w))
        self._watch.add(w.sentinel, (_EXIT, w))

    def _stop_worker(self, w: _Worker) -> None:
        """SIGTERM now, SIGKILL after ``KILL_GRACE`` (SIGKILL now once
        ``terminate(kill=True)`` was called)."""
        if not w.stopping:
            w.stopping = True
            w.kill_at = time.monotonic() + KILL_GRACE
            try:
                if self._kill_now:
                    w.process.kill()
                else:
                    w.process.terminate()
            except (OSError, AttributeError, ValueError):
                pass

    def _kill_all(self) -> None:
        """Last resort, from any thread: kill every worker and reap it."""
        for w in list(self._workers):
            try:
                if w.process.is_alive():
                    w.process.kill()
                w.process.join(KILL_GRACE)
            except (OSError, AttributeError, ValueError, AssertionError):
                pass

    # -- dispatch (lock held) -------------------------------------------------------------

    def _depth(self, func_id: int) -> int:
        seconds = self._task_seconds.get(func_id)
        if seconds is None:
            return 1
        return max(1, min(MAX_OUTSTANDING, int(PREFETCH_SECONDS / max(seconds, 1e-7))))

    def _can_take(self, w: _Worker, task: Task) -> bool:
        if w.stopping or w.stop_sent or w.unsendable:
            return False
        if self._maxtasks is not None and w.sent >= self._maxtasks:
            return False
        charge = _charge(w, task)
        held = len(w.outstanding)
        if held == 0:
            return w.ready or charge <= self._budget
        if not w.ready or held >= self._depth(task.func_id):
            return False
        unread = w.queued
        if self._words[2 * w.slot] == w.outstanding[0].id:  # it read the first one
            unread -= w.charges[0]
        return unread + charge <= self._budget

    def _dispatch_locked(self) -> None:
        pending = self._pending
        progress = True
        while pending and progress:
            progress = False
            for w in self._workers:
                while pending and (
                    pending[0].job.settled or pending[0].job.id <= self._cancel_upto
                ):
                    self._tally.counts[FAILED] += pending.popleft().count
                if not pending:
                    break
                if self._can_take(w, pending[0]):
                    task = pending.popleft()
                    if task.claim is None or task.claim():
                        self._send(w, task)
                    else:
                        self._tally.counts[FAILED] += task.count
                    progress = True
        for w in self._workers:
            # A worker with tasks in hand gets the new ones when a result comes back
            # (``_read``): one write for many tasks, none while it is busy.
            if w.outbox and (len(w.outstanding) - w.unsent < HELD or w.unsent >= BATCH):
                self._flush(w)

    def _send(self, w: _Worker, task: Task) -> None:
        """Queue ``task`` for ``w`` (sent by ``_flush``, with the function if it lacks it)."""
        size = _charge(w, task)
        if task.func_id not in w.funcs:
            w.outbox.append(task.func_msg)
            remember(w.funcs, task.func_id, len(task.func_msg))
        w.outbox.append(task.data)
        w.unsent += 1
        w.outstanding.append(task)  # a worker holding a task counts as busy
        w.charges.append(size)
        w.queued += size
        w.sent += 1

    def _flush(self, w: _Worker) -> None:
        payloads, w.outbox, w.unsent = w.outbox, [], 0
        try:
            send_frames(w.conn, payloads)
        except (OSError, ValueError):
            # The worker is gone: its sentinel will say so, and the tasks it never
            # started go back to the queue then.
            w.unsendable = True
            return
        self._show_running(w)

    def _count(self, done: int = 0, failed: int = 0) -> None:
        with self._lock:
            counts = self._tally.counts
            counts[DONE] += done
            counts[FAILED] += failed

    def _flush_counts(self) -> None:
        """Add the counts gathered since the last flush to the pool's registry record."""
        with self._lock:
            counts = self._tally.take()
        self._tally.publish(counts)

    def _show_running(self, w: _Worker) -> None:
        """Note a change of ``w``'s task; the registry hears of it in ``_update_labels``."""
        if w.outstanding:
            if not w.label_due:
                w.label_due = time.monotonic() + (
                    LABEL_DELAY if w.label is None else LABEL_INTERVAL
                )
                # The manager waits with no deadline: give it one, unless this task
                # will most likely be over before its label is due anyway.
                if (
                    self._sleeping
                    and self._task_seconds.get(w.outstanding[0].func_id, LABEL_DELAY)
                    >= LABEL_DELAY / 2
                ):
                    self._wake()
            return
        w.label_due = 0.0
        if w.label is not None:
            w.label = None
            telemetry.show_task(w.process, None)

    def _update_labels(self, now: float) -> None:
        for w in self._workers:
            if w.label_due and now >= w.label_due:
                w.label_due = 0.0
                if w.outstanding:
                    label = w.outstanding[0].label
                    if label != w.label:
                        w.label = label
                        telemetry.show_task(w.process, label)

    # -- the manager thread ---------------------------------------------------------------

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            try:
                self._wake_w.send_bytes(b"!")
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:
            traceback.print_exc()
            self._break(RuntimeError(f"the manager thread of {self.name} failed: {exc!r}"))
            self._kill_all()
        finally:
            self._close_fds()
            self._flush_counts()
            telemetry.pool_closed(self.name)
            self.finished.set()

    def _step(self) -> bool:
        exited = []
        self._sleeping = True  # first: a deadline set from now on wakes it
        timeout = self._timeout()
        self._sleeping = timeout is None
        events = self._watch.wait(timeout)
        self._sleeping = False
        if self._cancel_upto > self._cancelled_upto:
            self._cancel(self._cancel_upto)
        for kind, w in events:
            if kind == _WAKE:
                self._woken = False
                try:
                    if FAST:
                        os.read(self._wake_r.fileno(), 4096)
                    else:
                        while self._wake_r.poll():
                            self._wake_r.recv_bytes()
                except (OSError, EOFError):
                    pass
            elif kind == _EXIT:
                exited.append(w)
            elif not w.eof:
                self._read(w)
                if w.eof:
                    self._watch.remove(w.conn)
        for w in exited:
            self._reap(w)
        if any(self._tally.counts) and time.monotonic() >= self._tally.due:
            self._flush_counts()
        return self._maintain()

    def _timeout(self) -> float | None:
        deadlines = [w.kill_at for w in self._workers if w.stopping]
        deadlines += [w.label_due for w in self._workers if w.label_due]
        if any(self._tally.counts):
            deadlines.append(self._tally.due)
        if self._start_after:
            deadlines.append(self._start_after)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _read(self, w: _Worker) -> None:
        """Handle what ``w`` sent (one read: a burst of messages)."""
        messages, eof = w.reader.read()
        # After the read: a worker writes a task's output before its result, so what it
        # wrote for every result just read is in the output sockets now.
        _routing.drain(w.process)
        if eof:
            w.eof = True
        results: list[tuple[Task, list[Any], list[tuple[int, BaseException]]]] = []
        for data in messages:
            try:
                msg = read(data)
            except Exception as exc:
                msg = unloadable_result(exc)
            kind = msg[0]
            if kind == RESULT:
                if len(results) < len(w.outstanding):
                    task = w.outstanding[len(results)]
                    values, errors, seconds, started = parse_result(msg)
                    errs = self._errors(w, task, errors)
                    if isinstance(errors, BaseException):
                        values = []
                    results.append((task, values, errs))
                    if self.recorder.on:
                        apply = task.mode == APPLY
                        self.recorder.raw.append(
                            (
                                task.job.id,
                                w.lane,
                                started or time.perf_counter() - seconds,
                                seconds,
                                None if apply else task.start,
                                task.count,
                                len(errs),
                                task.label
                                if apply and seconds >= LABEL_SECONDS
                                else task.func_name,
                                None,
                                None,
                            )
                        )
                    old = self._task_seconds.get(task.func_id)
                    self._task_seconds[task.func_id] = (
                        seconds if old is None else 0.7 * old + 0.3 * seconds
                    )
            elif kind == READY:
                w.ready = True
                self._start_failures = 0
            elif kind == INIT_FAILED:
                self._init_failed(w, parse_init_failed(msg))
                return
        with self._lock:
            for _ in results:
                w.outstanding.popleft()
                w.queued -= w.charges.popleft()
            self._dispatch_locked()
            self._show_running(w)
        if not results:
            return
        failed = sum(len(errs) for _, _, errs in results)
        self._count(done=sum(t.count for t, _, _ in results) - failed, failed=failed)
        for task, values, errs in results:
            job = task.job
            if not job.settled and job.deliver(task, values, errs):
                self._finish(job, task.mode != APPLY)

    def _init_failed(self, w: _Worker, record: ErrorRecord) -> None:
        cause = rebuild(record, w.name, "the initializer")
        error = InitializerError(
            f"the pool's initializer {self._initializer_name} raised "
            f"{type(cause).__name__}: {cause} in {w.name}. The pool runs no task: "
            f"fix the initializer, then make a new pool"
        )
        error.__cause__ = cause
        self._break(error)

    def _errors(
        self, w: _Worker, task: Task, errors: ResultErrors | BaseException
    ) -> list[tuple[int, BaseException]]:
        if isinstance(errors, BaseException):
            exc = TaskSerializationError(
                f"the result of {task.label}, sent by {w.name}, cannot be loaded in this "
                f"process: {type(errors).__name__}: {errors}",
                what="result",
            )
            exc.__cause__ = errors
            return [(0, exc)]
        if task.mode == APPLY:
            return [(offset, rebuild(record, w.name, task.label)) for offset, record in errors]
        return [
            (offset, rebuild(record, w.name, index=task.start + offset, func=task.func_name))
            for offset, record in errors
        ]

    def _finish(self, job: Job, flush: bool = True) -> None:
        self._jobs.pop(job.id, None)  # atomic; no lock needed
        if flush and not self._jobs:  # a map ended the run: the monitor's counts are final
            self._flush_counts()  # (an apply's wait for ``telemetry.flush_all``, per cell)
        job.fire()

    def _reap(self, w: _Worker) -> None:
        """A worker exited: read what it sent, fail what it ran, requeue the rest."""
        while not w.eof:
            try:
                if not w.conn.poll():
                    break
            except (EOFError, OSError):
                break
            self._read(w)
        _routing.drain(w.process)
        self._watch.remove(w.conn)
        self._watch.remove(w.sentinel)
        # Not .exitcode or join(): they record the exit in the registry, and the record
        # must get the error first (below). The sentinel fires a moment before the exit
        # status can be collected: wait for it.
        code = _exitcode_of(w.process)
        popen = getattr(w.process, "_popen", None)
        if code is None and popen is not None:
            try:
                code = popen.wait(KILL_GRACE)
            except OSError:
                code = _exitcode_of(w.process)
        running = None
        with self._lock:
            if w in self._workers:
                self._workers.remove(w)
            self._free_slots.append(w.slot)
            tasks = list(w.outstanding)
            w.outstanding.clear()
            w.outbox, w.unsent = [], 0
            w.charges.clear()
            w.queued = 0
            if tasks and self._words[2 * w.slot] == tasks[0].id:
                running = tasks.pop(0)
            self._pending.extendleft(
                reversed([t for t in tasks if not t.job.settled and t.job.id > self._cancel_upto])
            )
            self._dispatch_locked()
        w.conn.close()
        error = None
        if running is not None:
            self.recorder.crashed(
                running.job.id,
                w.lane,
                None if running.mode == APPLY else running.start,
                running.count,
                running.label if running.mode == APPLY else running.func_name,
                code,
                cancelled=w.stopping,  # stopped by the pool (interrupt, terminate)
            )
        if running is not None and not running.job.settled:
            index = None if running.mode == APPLY else int(self._words[2 * w.slot + 1])
            label = running.label
            if index is not None and index < 0:  # ran untracked: somewhere in the chunk
                first = -1 - index
                index = None
                label += f" (items {first} to {first + running.count - 1})"
            message = crash_message(w.process.name, w.process.pid, code, label, index)
            error = message
            exc = WorkerCrashedError(
                message,
                worker=w.process.name,
                pid=w.process.pid,
                exitcode=code,
                task=label,
                index=index,
            )
            self._count(failed=running.count)
            if running.job.fail(exc, running):
                self._finish(running.job)
        elif (
            not w.ready
            and not w.stopping
            and not w.stop_sent
            and self.state != TERMINATE
            and self.broken is None
            and not shutdown.stopping()
        ):
            self._start_failed(w, code)
        telemetry.record_exit(w.process, error, code)

    def _start_failed(self, w: _Worker, code: int | None) -> None:
        self._start_failures += 1
        if self._start_failures < MAX_START_FAILURES:
            return
        how = crash_message(w.process.name, w.process.pid, code, "", None)
        how = how.split(" while running", 1)[0]
        if self._init is not None:
            error: BaseException = InitializerError(
                f"{how} while running the pool's initializer {self._initializer_name}, "
                f"{self._start_failures} times in a row. The pool runs no task: fix the "
                f"initializer, then make a new pool"
            )
        else:
            error = WorkerCrashedError(
                f"{how} while starting, {self._start_failures} times in a row. The pool "
                f"runs no task. The worker's own error output (in the terminal that runs "
                f"Jupyter) says why",
                worker=w.process.name,
                pid=w.process.pid,
                exitcode=code,
            )
        self._break(error)

    def _break(self, error: BaseException) -> None:
        """The pool cannot run tasks: fail every job with ``error``, stop the workers."""
        if self.broken is None:
            self.broken = error
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._pending.clear()
            for w in self._workers:
                w.outstanding.clear()
                w.outbox, w.unsent = [], 0
                w.charges.clear()
                w.queued = 0
                self._stop_worker(w)
        for job in jobs:
            if job.fail(_fresh(error), None):
                job.fire()

    def _cancel(self, upto: int) -> None:
        self._cancelled_upto = upto
        with self._lock:
            jobs = [job for job_id, job in self._jobs.items() if job_id <= upto]
            for job in jobs:
                del self._jobs[job.id]
            for w in self._workers:
                if any(t.job.id <= upto for t in w.outstanding):
                    self._stop_worker(w)
        for job in jobs:
            if job.fail(
                TaskCancelledError("cancelled: the pool was interrupted (KeyboardInterrupt)"), None
            ):
                job.fire()

    def _maintain(self) -> bool:
        """Replace workers, stop idle ones after close(); False when all is over."""
        now = time.monotonic()
        self._update_labels(now)
        for w in list(self._workers):
            if w.stopping and now >= w.kill_at:
                try:
                    w.process.kill()
                except (OSError, AttributeError, ValueError):
                    pass
                w.kill_at = now + KILL_GRACE
        if self.state == TERMINATE:
            self._terminate_jobs()
            for w in self._workers:
                self._stop_worker(w)
            return bool(self._workers)
        busy = bool(self._pending) or any(w.outstanding for w in self._workers)
        if self.state == CLOSE and not busy or self.broken is not None:
            for w in self._workers:
                if not w.stop_sent and not w.stopping:
                    w.stop_sent = True
                    try:
                        w.conn.send_bytes(stop_message())
                    except (OSError, ValueError):
                        self._stop_worker(w)
            return bool(self._workers) or self.state == RUN
        if shutdown.stopping():
            return True
        if self._start_after and now < self._start_after:
            return True
        self._start_after = 0.0
        retiring = sum(
            1 for w in self._workers if self._maxtasks is not None and w.sent >= self._maxtasks
        )
        while self._free_slots and len(self._workers) - retiring < self.processes:
            try:
                self._start_worker()
            except Exception as exc:
                self._start_failures += 1
                if self._start_failures >= MAX_START_FAILURES:
                    error = WorkerCrashedError(
                        f"cannot start a worker for {self.name}: {type(exc).__name__}: {exc}"
                    )
                    error.__cause__ = exc
                    self._break(error)
                else:
                    self._start_after = time.monotonic() + START_RETRY
                break
        if self._pending:
            with self._lock:
                self._dispatch_locked()
        return True

    def _terminate_jobs(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._pending.clear()
        for job in jobs:
            if job.fail(TaskCancelledError("cancelled: the pool was terminated"), None):
                job.fire()

    def _close_fds(self) -> None:
        self._watch.close()
        for conn in (self._wake_r, self._wake_w, *(w.conn for w in self._workers)):
            try:
                conn.close()
            except OSError:
                pass


def _charge(w: _Worker, task: Task) -> int:
    """Pipe buffer that sending ``task`` to ``w`` takes (with its function if new)."""
    charge = task.size + WRITE_COST
    if task.func_id not in w.funcs:
        charge += len(task.func_msg) + WRITE_COST
    return charge


def _pipe_buffer(conn: connection.Connection) -> int:
    """The send buffer of a connection's socket, or ``DEFAULT_PIPE_BUFFER``."""
    if FAST:
        import socket

        try:
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                return max(
                    DEFAULT_PIPE_BUFFER, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                )
        except OSError:
            pass
    return DEFAULT_PIPE_BUFFER


class _Interruptible(Protocol):
    def interrupt(self) -> None: ...


class Interrupting:
    """``PoolCore.interrupting()`` (and a cluster engine's): one object per engine, no
    state (any thread may use it, nested or not), cheaper to enter than a
    generator-based context manager. ``core`` is anything with ``interrupt()``."""

    __slots__ = ("_core",)

    def __init__(self, core: _Interruptible) -> None:
        self._core = core

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._core.interrupt()  # and the interrupt goes on


# What the manager thread waits on, by kind.
_WAKE, _RESULT, _EXIT = 0, 1, 2


class _Watch:
    """The wake-up pipe, worker connections and sentinels the manager thread waits on:
    a persistent selector (one system call per wait, no re-registration); on Windows,
    ``multiprocessing.connection.wait``."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector() if FAST else None
        self._objects: dict[Any, Any] = {}

    def add(self, obj: Any, data: Any) -> None:
        if self._selector is not None:
            self._selector.register(obj, selectors.EVENT_READ, data)
        self._objects[obj] = data

    def remove(self, obj: Any) -> None:
        if self._objects.pop(obj, None) is not None and self._selector is not None:
            try:
                self._selector.unregister(obj)
            except (KeyError, ValueError, OSError):
                pass

    def wait(self, timeout: float | None) -> list[Any]:
        if self._selector is not None:
            return [key.data for key, _ in self._selector.select(timeout)]
        ready = connection.wait(list(self._objects), timeout)
        return [self._objects[obj] for obj in ready]

    def close(self) -> None:
        if self._selector is not None:
            self._selector.close()


def _fresh(error: BaseException) -> BaseException:
    """A new exception like ``error`` (raising one object twice chains its tracebacks)."""
    try:
        copy = type(error)(*error.args)
        copy.__dict__.update(error.__dict__)
    except Exception:
        return error
    copy.__cause__ = error.__cause__
    return copy

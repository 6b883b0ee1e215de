"""The client side of a pool on a Dask cluster: submit, collect, crashes, interrupts.

``ClusterCore`` plays ``_pool.core.PoolCore``'s part for the result objects of
``_pool.results`` (``new_job_id``, ``interrupting``, ``finish_job``): each task (an
``apply`` call or a chunk of a map) becomes one Dask future of ``remote.run`` under a
key of its own (``mpnb-<pool>-<n>``, never ``pure``: nothing is cached behind the
user's back), at most ``window`` of them in flight. A thread takes the futures as
they complete (``distributed.as_completed``, results gathered by Dask's event loop),
waits for the task's output events to be published first, and tells the job.

A worker that dies fails the task it was running with ``WorkerCrashedError``, at once
and on no other worker: a scheduler plugin (``plugin.NoRetry``) turns the loss of a
worker into ``KilledWorker`` for mpnb's keys only, without Dask's retries; of the
tasks that were on that worker, those that had started (their ``started`` event) are
the crashed ones, the others never ran and are submitted again.

A ``KeyboardInterrupt`` while waiting fails every job submitted so far with
``TaskCancelledError`` and cancels their futures on the cluster, without waiting.
"""

from __future__ import annotations

import functools
import itertools
import os
import pickle
import secrets
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

from distributed import Client, as_completed

from .._pool.core import Interrupting
from .._pool.protocol import Job, Task
from ..errors import TaskCancelledError, WorkerCrashedError, rebuild, short_repr
from ..registry import REGISTRY
from ..timeline.record import Recorder, now
from . import remote
from .plugin import NoRetry
from .publish import Publisher

__all__ = ["ClusterCore", "Spec", "RUN", "CLOSE", "TERMINATE"]

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

# Seconds a result waits at most for the output its task sent before it.
OUTPUT_WAIT = 0.5
# Seconds to gather the tasks a lost worker held before telling which one crashed.
CRASH_GATHER = 0.1
# Seconds after a cancel at which a worker still running a cancelled task is restarted
# (on a cluster the pool owns).
RESTART_AFTER = 0.5
# Seconds between two looks at the size of a cluster the pool owns.
KEEP_INTERVAL = 1.0


class Spec:
    """One task to run: pickled function and payload, where its items start."""

    __slots__ = (
        "job",
        "task",
        "func_bytes",
        "payload",
        "star",
        "shared",
        "route",
        "seq",
        "key",
        "future",
        "worker",
        "pid",
        "what",
        "item",
        "items",
        "at",
    )

    def __init__(
        self,
        job: Job,
        task: Task,
        func_bytes: bytes,
        payload: bytes,
        star: int,
        shared: tuple[Any, ...],
        route: Any,
        what: str,
        item: str,
        items: list[Any] | None = None,
    ) -> None:
        self.job = job
        self.task = task
        self.func_bytes = func_bytes
        self.payload = payload
        self.star = star
        self.shared = shared
        self.route = route
        self.seq = 0
        self.key = ""
        self.future: Any = None
        self.worker = ""
        self.pid: int | None = None
        self.what = what  # 'square(3)'
        self.item = item  # short repr of the first item ('' for apply)
        self.items = items  # the chunk's items (for a map)
        self.at: int | None = None  # the item running past ``remote.FLUSH_DELAY``


class ClusterCore:
    """Runs a pool's jobs on ``client``'s cluster (see the module docstring)."""

    def __init__(self, client: Client, window: int | None, name: str, owned: Any = None) -> None:
        self.client = client
        # The cluster the pool owns (``"local"``): its workers still running cancelled
        # tasks are restarted.
        self.owned = owned
        self.name = name
        self.window = window  # None: no limit of our own (the cluster's threads are)
        self.state = RUN
        self.broken: BaseException | None = None
        self.token = f"{name.lower()}-{secrets.token_hex(4)}"
        self.topic = f"mpnb-{self.token}"
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._job_ids = itertools.count(1)
        self._seq = itertools.count()
        self._keys = itertools.count()
        self._jobs: dict[int, Job] = {}
        self._queue: deque[Spec] = deque()
        self._running: dict[str, Spec] = {}  # by key
        self._received: dict[str, int] = {}  # output events by key
        self._lost: dict[str, list[Spec]] = {}  # by worker address, being gathered
        # Workers this pool restarted: losing them crashed no task.
        self._restarted: set[str] = set()
        self._last_job = 0
        # Tasks of this pool by worker address: [running now, done] (for the monitor).
        self.per_worker: dict[str, list[int]] = {}
        self._done = 0
        self._interrupting = Interrupting(self)
        self._publisher = Publisher()
        #: the timeline's records: a lane per worker process (address and pid)
        self.recorder = Recorder(name)
        self._lanes: dict[tuple[str, int | None], int] = {}
        self._ac = as_completed(loop=client.loop, with_results=True, raise_errors=False)
        try:
            client.register_plugin(NoRetry(), name=NoRetry.name)
        except Exception as exc:  # a scheduler without mpnb: Dask's retries stay
            warnings.warn(
                f"mpnb: the scheduler at {client.scheduler.address} did not take mpnb's "
                f"plugin ({exc!r}); a task whose worker dies may be retried on other "
                f"workers before it fails. Install mpnb where the scheduler runs",
                RuntimeWarning,
                stacklevel=4,
            )
        client.subscribe_topic(self.topic, self._on_event)
        self._thread = threading.Thread(target=self._run, name=f"mpnb-{name}", daemon=True)
        self._thread.start()
        if owned is not None:
            threading.Thread(
                target=self._keep_workers, name=f"mpnb-{name}-size", daemon=True
            ).start()

    # -- what the result objects need (``_pool.results.Owner``'s core) --

    def new_job_id(self) -> int:
        return next(self._job_ids)

    def interrupting(self) -> Interrupting:
        return self._interrupting

    def finish_job(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)

    # -- the pool's calls --

    def check(self) -> None:
        if os.getpid() != self._owner:
            raise RuntimeError(
                f"{self.name} belongs to process {self._owner}: a forked child cannot "
                f"use its parent's pool; make a new one there"
            )
        if self.state != RUN:
            raise ValueError("Pool not running")
        if self.client.status in ("closed", "closing"):
            raise ValueError(f"Pool not running: its Dask client is {self.client.status}")

    def submit(self, job: Job, specs: list[Spec]) -> None:
        with self._lock:
            self.check()
            if not (self._jobs or self._queue or self._running):
                self.recorder.new_run(job.id)
            self._jobs[job.id] = job
            self._last_job = max(self._last_job, job.id)
            for spec in specs:
                spec.seq = next(self._seq)
                self._queue.append(spec)
            self._pump()
        REGISTRY.count_pool(self.name, submitted=sum(s.task.count for s in specs))

    def tasks_done(self) -> int:
        return self._done

    def interrupt(self) -> None:
        """Fail every job submitted so far; cancel their futures, not waiting."""
        self._cancel("cancelled: the pool was interrupted (KeyboardInterrupt)", self._last_job)

    def close(self) -> None:
        if self.state == RUN:
            self.state = CLOSE
            with self._cond:
                self._cond.notify_all()

    def terminate(self) -> None:
        if self.state == TERMINATE:
            return
        self.state = TERMINATE
        self._cancel("cancelled: the pool was terminated", None, wait=True)
        with self._cond:
            self._cond.notify_all()
        self._unsubscribe()

    def join(self) -> None:
        with self._cond:
            while self._jobs or self._queue or self._running:
                if self.state == TERMINATE:
                    break
                self._cond.wait(0.1)
        self._unsubscribe()

    def idle(self) -> bool:
        return not (self._jobs or self._queue or self._running)

    # -- inside --

    def _unsubscribe(self) -> None:
        try:
            if self.client.status == "running":
                self.client.unsubscribe_topic(self.topic)
        except Exception:
            pass

    def _pump(self) -> None:
        """Submit queued tasks while the window allows (lock held)."""
        while self._queue and (self.window is None or len(self._running) < self.window):
            spec = self._queue.popleft()
            if spec.job.settled:
                continue
            spec.key = f"{self.topic}-{next(self._keys)}"
            spec.worker, spec.pid = "", None
            self._running[spec.key] = spec
            spec.future = self.client.submit(
                remote.run,
                self.topic,
                spec.key,
                spec.route,
                spec.func_bytes,
                spec.payload,
                spec.star,
                spec.task.start,
                *spec.shared,
                key=spec.key,
                pure=False,
                retries=0,
            )
            self._ac.add(spec.future)
            self._cond.notify_all()

    def _cancel(self, message: str, upto: int | None, wait: bool = False) -> None:
        with self._lock:
            jobs = [j for i, j in self._jobs.items() if upto is None or i <= upto]
            for job in jobs:
                self._jobs.pop(job.id, None)
            ids = {job.id for job in jobs}
            self._queue = deque(s for s in self._queue if s.job.id not in ids)
            futures = [s.future for s in self._running.values() if s.job.id in ids]
            for key in [k for k, s in self._running.items() if s.job.id in ids]:
                del self._running[key]
            self._cond.notify_all()
        for job in jobs:
            if job.fail(TaskCancelledError(message), None):
                job.fire()
        if futures:
            restart = self.owned is not None and self.state != TERMINATE
            if wait:
                self._cancel_futures(futures, restart)
            else:
                threading.Thread(
                    target=self._cancel_futures, args=(futures, restart), daemon=True
                ).start()

    def _cancel_futures(self, futures: list[Any], restart: bool) -> None:
        """Cancel ``futures``; with ``restart``, restart the workers still running one
        of them ``RESTART_AFTER`` seconds later (Dask cannot stop a running task), so
        that the next tasks start at once."""
        try:
            if self.client.status != "running":
                return
            self.client.cancel(futures, force=True)
            if not restart:
                return
            keys = {f.key for f in futures}
            time.sleep(RESTART_AFTER)
            stacks = self.client.call_stack()
            busy = sorted(w for w, running in stacks.items() if keys & set(running))
            if busy:
                with self._lock:
                    self._restarted.update(busy)
                self.client.restart_workers(busy, raise_for_error=False)
        except Exception:
            pass

    def _keep_workers(self) -> None:
        """The owned cluster's watcher thread: keep its size.

        A ``LocalCluster`` drops a worker whose name has not come back
        ``distributed.deploy.lost-worker-timeout`` after it was lost; two losses close
        together (a crash, a restart) can make it drop one that was coming back. Then
        asking for the cluster's size again (``scale``) starts what it dropped, as a
        local pool replaces a dead worker."""
        cluster = self.owned
        while self.state != TERMINATE:
            time.sleep(KEEP_INTERVAL)
            try:
                if self.state != TERMINATE and len(cluster.workers) < len(cluster.worker_spec):
                    cluster.scale(len(cluster.worker_spec))
            except Exception:
                pass

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A task's event (Dask's event loop): it started, or it wrote output."""
        msg = event[1]
        key = msg.get("key", "")
        kind = msg.get("kind")
        if kind == remote.OUTPUT:
            self._publisher.publish(msg.get("route"), msg["stream"], msg["text"], msg["worker"])
        with self._cond:
            if key in self._running:  # not a cancelled task still writing
                self._received[key] = self._received.get(key, 0) + 1
            if kind == remote.AT_ITEM:
                spec = self._running.get(key)
                if spec is not None:
                    spec.at = msg.get("index")
            elif kind == remote.STARTED:
                spec = self._running.get(key)
                if spec is not None:
                    spec.worker, spec.pid = msg["worker"], msg.get("pid")
                    self.per_worker.setdefault(spec.worker, [0, 0])[0] += 1
            self._cond.notify_all()

    def _run(self) -> None:
        """The collector thread: one completed future after the other."""
        while True:
            with self._cond:
                while self._ac.is_empty() and self.state != TERMINATE:
                    if self.state == CLOSE and self.idle():
                        return
                    self._cond.wait(0.5)
                if self.state == TERMINATE:
                    return
            try:
                future, result = next(self._ac)
            except StopIteration:
                continue
            except Exception:
                continue
            try:
                self._completed(future, result)
            except Exception as exc:  # never let the collector die
                self._broken(exc)

    def _broken(self, exc: BaseException) -> None:
        self.broken = exc
        self._cancel(f"cancelled: the pool's collector failed ({exc!r})", None)

    def _completed(self, future: Any, result: Any) -> None:
        with self._lock:
            spec = self._running.get(future.key)
            if spec is None or spec.future is not future:
                return  # cancelled, or resubmitted under a new key
        if future.status == "finished":
            self._finished(spec, result)
        elif future.status == "error":
            exc = result[1] if isinstance(result, tuple) and len(result) == 3 else result
            if type(exc).__name__ == "KilledWorker":
                self._lost_worker(spec, exc)
            else:
                self._settle(spec, lambda: spec.job.fail(_as_exception(exc), spec.task))
        else:  # cancelled by something else than this pool
            self._settle(
                spec,
                lambda: spec.job.fail(
                    TaskCancelledError(f"cancelled on the cluster: {spec.what}"), spec.task
                ),
            )

    def _finished(self, spec: Spec, result: Any) -> None:
        blob, records, sent, worker, pid, began, seconds = result
        with self._cond:  # its output comes first
            self._cond.wait_for(lambda: self._received.get(spec.key, 0) >= sent, OUTPUT_WAIT)
            self._received.pop(spec.key, None)
        values = pickle.loads(blob) if blob is not None else []
        task = spec.task
        errors = []
        for offset, record in records:
            if spec.star < 0:
                exc = rebuild(record, worker, task=spec.what)
            else:
                exc = rebuild(record, worker, index=task.start + offset, func=task.func_name)
            errors.append((offset, exc))
        if len(values) < task.count and spec.star >= 0 and not errors:
            values += [None] * (task.count - len(values))
        if self.recorder.on:
            # The worker's wall-clock start on this process's timeline clock.
            start = now() - max(time.time() - began, seconds)
            self.recorder.raw.append(
                (
                    task.job.id,
                    self._lane(worker, pid, start),
                    start,
                    seconds,
                    None if spec.star < 0 else task.start,
                    task.count,
                    len(errors),
                    task.func_name,
                    None,
                    None,
                )
            )
        self._settle(spec, lambda: spec.job.deliver(task, values, errors), bool(errors))

    def _settle(self, spec: Spec, tell: Callable[[], bool], failed: bool = True) -> None:
        with self._lock:
            if self._running.pop(spec.key, None) is None:
                return
            self._received.pop(spec.key, None)
            self._done += spec.task.count
            if spec.worker:
                counts = self.per_worker.setdefault(spec.worker, [0, 0])
                counts[0] = max(counts[0] - 1, 0)
                counts[1] += 1
        settled = tell()
        REGISTRY.count_pool(
            self.name,
            done=0 if failed else spec.task.count,
            failed=spec.task.count if failed else 0,
        )
        if settled:
            with self._lock:
                self._jobs.pop(spec.job.id, None)
            spec.job.fire()
        with self._lock:
            self._pump()
            self._cond.notify_all()

    def _lost_worker(self, spec: Spec, exc: BaseException) -> None:
        last = getattr(exc, "last_worker", None)
        address = str(getattr(last, "address", "") or spec.worker or "?")
        with self._lock:
            held = self._lost.setdefault(address, [])
            held.append(spec)
            first = len(held) == 1
        if first:
            nthreads = int(getattr(last, "nthreads", 1) or 1)
            timer = threading.Timer(CRASH_GATHER, self._tell_crashed, (address, nthreads))
            timer.daemon = True
            timer.start()

    def _lane(self, address: str, pid: int | None, started: float) -> int:
        """The timeline lane of a worker process, made on first sight."""
        key = (address, pid)
        lane = self._lanes.get(key)
        if lane is None:
            where = f"{address} (pid {pid})" if pid else address
            self.recorder.lanes.append((where, len(self._lanes), pid, started))
            lane = self._lanes[key] = len(self.recorder.lanes) - 1
        return lane

    def _tell_crashed(self, address: str, nthreads: int) -> None:
        """Of the tasks a lost worker held, fail those that ran; submit the others."""
        with self._lock:
            held = self._lost.pop(address, [])
        ran = [s for s in held if s.worker == address]
        if not ran and address not in self._restarted:
            # Their ``started`` events were lost with the worker: the oldest ran.
            ran = sorted(held, key=lambda s: s.seq)[:nthreads]
        again = [s for s in held if s not in ran]
        for spec in ran:
            if self.recorder.on:
                task = spec.task
                self.recorder.crashed(
                    task.job.id,
                    self._lane(address, spec.pid, now()),
                    None if spec.star < 0 else task.start,
                    task.count,
                    task.func_name,
                    None,
                    False,
                )
            self._settle(
                spec, functools.partial(spec.job.fail, _crash_error(spec, address), spec.task)
            )
        if again:
            with self._lock:
                for spec in sorted(again, key=lambda s: s.seq, reverse=True):
                    if self._running.pop(spec.key, None) is not None:
                        self._queue.appendleft(spec)
                if self.state != TERMINATE:
                    self._pump()


def _crash_error(spec: Spec, address: str) -> WorkerCrashedError:
    task = spec.task
    label, index, where = spec.what, None, ""
    if spec.star >= 0:
        index = task.start
        if task.count == 1:
            where = f" (item {index})"
        elif spec.at is not None and spec.items is not None:
            index = spec.at
            label = f"{task.func_name}({short_repr(spec.items[index - task.start])})"
            where = f" (item {index})"
        else:
            label = f"{task.func_name} on items {task.start}-{task.start + task.count - 1}"
    pid = f" (pid {spec.pid})" if spec.pid else ""
    message = (
        f"dask worker {address}{pid} died while running {label}{where}: the task (or a "
        f"library it called) ended the process (os._exit(), a signal, or the out-of-memory "
        f"killer). The task was not run again; other tasks go on."
    )
    return WorkerCrashedError(message, worker=address, pid=spec.pid, task=label, index=index)


def _as_exception(exc: Any) -> BaseException:
    if isinstance(exc, BaseException):
        return exc
    return RuntimeError(f"the task failed on the cluster: {short_repr(exc)}")

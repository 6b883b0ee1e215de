"""The dashboard's sampler: the processes mpnb started, and the machine they run on.

A daemon thread wakes every ``interval`` seconds (``Event.wait``, so stopping is
immediate), reads the registry and psutil, and publishes an immutable
:class:`~mpnb.dashboard.snapshot.Snapshot` to its listeners. It also notices when a
process has ended and writes its exit code into the registry, so the core need not.

Exits are read with care: ``Process.exitcode`` consumes the status (``waitpid``, or
a read from the forkserver's pipe), and two threads polling it at the moment a
child dies can race. The sampler therefore first looks, without consuming
anything, whether the process's sentinel is ready, and reads ``exitcode`` only on a
later tick, when a ``join()`` or a pool's own watcher woken by that exit has long
since read it.

psutil is imported here and nowhere else in mpnb; nothing here imports ipywidgets.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait as _wait_ready
from typing import Any

try:
    import psutil
except ImportError as exc:  # pragma: no cover - psutil is a dependency
    raise ImportError("mpnb's monitor needs psutil: pip install psutil") from exc

from ..registry import REGISTRY, ProcessRecord, Registry
from .snapshot import PoolSample, ProcessSample, Snapshot, SystemSample, state_of_exitcode

__all__ = ["DEFAULT_HISTORY", "DEFAULT_TREND", "Sampler", "running_samplers", "stop_all"]

_log = logging.getLogger(__name__)

# Finished processes shown by default: enough to find the one that died a minute
# ago, few enough to keep the table readable.
DEFAULT_HISTORY = 50
# Points of total CPU and memory kept for the trend lines (a minute at 0.5 s).
DEFAULT_TREND = 120
# Seconds over which a pool's tasks per second are averaged.
_RATE_WINDOW = 5.0

_STATE_OF_STATUS = {
    psutil.STATUS_RUNNING: "running",
    psutil.STATUS_WAKING: "running",
    psutil.STATUS_ZOMBIE: "exiting",
    psutil.STATUS_DEAD: "exiting",
}


class _Tracked:
    """psutil handle of one process and its previous CPU time, for CPU %."""

    __slots__ = ("proc", "cpu", "at")

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.cpu: float | None = None
        self.at = 0.0

    def read(self, now: float) -> tuple[str, float | None, int]:
        with self.proc.oneshot():
            times = self.proc.cpu_times()
            rss = self.proc.memory_info().rss
            status = self.proc.status()
        cpu = times.user + times.system
        percent = None
        if self.cpu is not None and now > self.at:
            percent = max(0.0, 100.0 * (cpu - self.cpu) / (now - self.at))
        self.cpu, self.at = cpu, now
        return _STATE_OF_STATUS.get(status, "sleeping"), percent, rss


def _busy_idle(times: Any) -> tuple[float, float]:
    idle = times.idle + getattr(times, "iowait", 0.0)
    # guest time is already counted in user and nice
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - idle, total


def _has_ended(handle: Any) -> bool:
    """Whether a started process has ended, without reading its exit status."""
    if getattr(handle, "pid", None) is None:
        return False
    try:
        return bool(_wait_ready([handle.sentinel], 0))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        return psutil.Process(handle.pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _exitcode(handle: Any) -> int | None:
    try:
        code = handle.exitcode
    except (ValueError, OSError):  # closed Process object
        return None
    return None if code is None else int(code)


class Sampler:
    """Samples the registry's processes and the machine every ``interval`` seconds.

    ``sample()`` takes one snapshot now; ``start()`` runs a daemon thread doing so
    until ``stop()``. Listeners get each snapshot in the sampler's thread.
    """

    def __init__(
        self,
        interval: float = 0.5,
        *,
        history: int = DEFAULT_HISTORY,
        trend: int = DEFAULT_TREND,
        registry: Registry | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        if history < 0:
            raise ValueError(f"history must be zero or more finished processes, not {history!r}")
        self.interval = float(interval)
        self.history = int(history)
        self._registry = REGISTRY if registry is None else registry
        if self._registry.history < self.history:
            self._registry.set_history(self.history)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._stop_listeners: list[Callable[[], None]] = []
        self._tracked: dict[int, _Tracked] = {}
        self._ended: dict[int, float] = {}  # key -> when its end was seen
        self._cpu_prev = [_busy_idle(t) for t in psutil.cpu_times(percpu=True)]
        self._cpu_trend: deque[float] = deque(maxlen=trend)
        self._mem_trend: deque[float] = deque(maxlen=trend)
        self._pool_ends: dict[str, deque[tuple[float, int]]] = {}
        self._cpu_seconds = 0.0
        self._started_at: float | None = None
        self._logged_error = False
        self.latest: Snapshot | None = None
        with _RUNNING_LOCK:
            _MADE.add(self)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def cost(self) -> float:
        """CPU time of the sampler's thread per second of wall time since it started
        (0.005 is half a percent of one core)."""
        if self._started_at is None:
            return 0.0
        wall = time.monotonic() - self._started_at
        return self._cpu_seconds / wall if wall > 0 else 0.0

    def start(self) -> Sampler:
        """Take a first sample now, then keep sampling in a daemon thread."""
        with _RUNNING_LOCK:
            if self._thread is not None:
                return self
            self._started_at = time.monotonic()
            self.sample()
            self._thread = threading.Thread(target=self._run, name="mpnb-monitor", daemon=True)
            _RUNNING.add(self)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop sampling and tell the ``on_stop`` listeners; idempotent."""
        with _RUNNING_LOCK:
            if self._stopping.is_set():
                return
            self._stopping.set()
            _RUNNING.discard(self)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        for callback in self._stop_listeners:
            try:
                callback()
            except Exception:
                _log.exception("mpnb monitor: a stop listener failed")

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def subscribe(self, callback: Callable[[Snapshot], None]) -> None:
        """Call ``callback(snapshot)`` after each sample, in the sampling thread."""
        self._listeners.append(callback)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, when the sampler stops."""
        self._stop_listeners.append(callback)

    def _run(self) -> None:
        clock = time.thread_time()
        while not self._stopping.wait(self.interval):
            try:
                self.sample()
            except Exception:
                if not self._logged_error:
                    self._logged_error = True
                    _log.exception("mpnb monitor: sampling failed; it will keep trying")
            now = time.thread_time()
            self._cpu_seconds += now - clock
            clock = now

    # -- sampling ----------------------------------------------------------------
    def sample(self) -> Snapshot:
        """Take one snapshot now, record exits in the registry, tell the listeners."""
        with self._lock:
            snapshot = self._sample()
            self.latest = snapshot
        for callback in list(self._listeners):
            try:
                callback(snapshot)
            except Exception:
                if not self._logged_error:
                    self._logged_error = True
                    _log.exception("mpnb monitor: a listener failed")
        return snapshot

    def _sample(self) -> Snapshot:
        wall, now = time.time(), time.monotonic()
        handles = self._reap(self._registry.live_handles())
        records, pools = self._registry.snapshot()
        live = [r for r in records if not r.finished]
        finished = [r for r in records if r.finished][: self.history]
        processes = tuple(self._process(r, handles.get(r.key), wall, now) for r in live)
        processes += tuple(self._finished(r) for r in finished)
        for key in set(self._tracked) - {r.key for r in live}:
            del self._tracked[key]

        pool_samples = []
        for pool in pools:
            ends = self._pool_ends.setdefault(pool.name, deque())
            ends.append((now, pool.done + pool.failed))
            while len(ends) > 2 and now - ends[1][0] >= _RATE_WINDOW:
                ends.popleft()
            (t0, n0), (t1, n1) = ends[0], ends[-1]
            rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
            pool_samples.append(
                PoolSample(
                    name=pool.name,
                    processes=pool.processes,
                    start_method=pool.start_method,
                    submitted=pool.submitted,
                    done=pool.done,
                    failed=pool.failed,
                    closed=pool.closed,
                    rate=rate,
                )
            )
        for name in set(self._pool_ends) - {p.name for p in pools}:
            del self._pool_ends[name]

        system = self._system()
        self._cpu_trend.append(system.cpu_total)
        self._mem_trend.append(system.memory_percent)
        return Snapshot(
            time=wall,
            processes=processes,
            pools=tuple(pool_samples),
            system=system,
            cpu_history=tuple(self._cpu_trend),
            memory_history=tuple(self._mem_trend),
            sampler_cost=self.cost,
        )

    def _reap(self, handles: dict[int, Any]) -> dict[int, Any]:
        """Record the exit codes of processes seen ended on an earlier tick."""
        for key in self._ended.keys() - handles.keys():
            del self._ended[key]
        for key, handle in handles.items():
            if key in self._ended:
                code = _exitcode(handle)
                if code is not None:
                    self._registry.update_process(key, exitcode=code, ended_at=self._ended[key])
            elif _has_ended(handle):
                self._ended[key] = time.time()
        return handles

    def _process(
        self, record: ProcessRecord, handle: Any, wall: float, now: float
    ) -> ProcessSample:
        pid = record.pid if record.pid is not None else getattr(handle, "pid", None)
        state, cpu, rss = "starting", None, None
        if record.key in self._ended:
            state = "exiting"
        elif pid is not None:
            tracked = self._tracked.get(record.key)
            try:
                if tracked is None or tracked.proc.pid != pid:
                    tracked = self._tracked[record.key] = _Tracked(pid)
                state, cpu, rss = tracked.read(now)
            except psutil.NoSuchProcess:
                state = "exiting"
            except psutil.AccessDenied:
                state = "running"
        started = record.started_at
        return ProcessSample(
            key=record.key,
            name=record.name,
            pid=pid,
            pool=record.pool,
            start_method=record.start_method,
            state=state,
            exitcode=None,
            cpu_percent=cpu,
            rss=rss,
            runtime=None if started is None else wall - started,
            task=record.task,
            error=record.error,
        )

    @staticmethod
    def _finished(record: ProcessRecord) -> ProcessSample:
        assert record.exitcode is not None
        runtime = None
        if record.started_at is not None and record.ended_at is not None:
            runtime = record.ended_at - record.started_at
        return ProcessSample(
            key=record.key,
            name=record.name,
            pid=record.pid,
            pool=record.pool,
            start_method=record.start_method,
            state=state_of_exitcode(record.exitcode),
            exitcode=record.exitcode,
            cpu_percent=None,
            rss=None,
            runtime=runtime,
            task=None,
            error=record.error,
        )

    def _system(self) -> SystemSample:
        cores = []
        current = [_busy_idle(t) for t in psutil.cpu_times(percpu=True)]
        all_busy = all_total = 0.0
        for (busy0, total0), (busy1, total1) in zip(self._cpu_prev, current):
            busy, total = max(0.0, busy1 - busy0), max(0.0, total1 - total0)
            cores.append(min(100.0, 100.0 * busy / total) if total > 0 else 0.0)
            all_busy, all_total = all_busy + busy, all_total + total
        self._cpu_prev = current
        memory = psutil.virtual_memory()
        return SystemSample(
            cpu_percent=tuple(cores),
            cpu_total=min(100.0, 100.0 * all_busy / all_total) if all_total > 0 else 0.0,
            memory_percent=memory.percent,
            memory_used=memory.total - memory.available,
            memory_total=memory.total,
        )


_RUNNING: set[Sampler] = set()
_RUNNING_LOCK = threading.RLock()
# Every sampler not garbage yet, started or not (a dashboard not displayed yet has one).
_MADE: weakref.WeakSet[Sampler] = weakref.WeakSet()


def running_samplers() -> list[Sampler]:
    """The samplers whose threads run now."""
    with _RUNNING_LOCK:
        return list(_RUNNING)


def stop_all() -> None:
    """Stop every sampler, running or not started yet (their dashboards freeze on their
    last snapshot)."""
    with _RUNNING_LOCK:
        samplers = set(_RUNNING) | set(_MADE)
    for sampler in samplers:
        sampler.stop()

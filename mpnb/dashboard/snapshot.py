"""What the dashboard shows at one moment: immutable samples of processes, pools and
the machine.

The sampler (``mpnb.dashboard.sampler``) builds a ``Snapshot`` on each tick; the views
(``mpnb.dashboard.views``) and the widget (``mpnb.dashboard.widget``) only read them.
Plain data: nothing here imports psutil or ipywidgets.
"""

from __future__ import annotations

import dataclasses

from ..registry import signal_name

__all__ = [
    "STATES",
    "ProcessSample",
    "PoolSample",
    "SystemSample",
    "Snapshot",
    "describe_exitcode",
    "state_of_exitcode",
]

#: Every state a process can be shown in. ``exiting``: its end was seen, its exit
#: code not yet read (at most one tick).
STATES = ("starting", "running", "sleeping", "exiting", "finished", "failed", "killed")


def describe_exitcode(code: int | None) -> str:
    """``0``, ``1``, ``-9 SIGKILL``; empty while the process runs."""
    if code is None:
        return ""
    return f"{code} {signal_name(code)}" if code < 0 else str(code)


def state_of_exitcode(code: int) -> str:
    """The state a process that ended with ``code`` is shown in."""
    return "finished" if code == 0 else "killed" if code < 0 else "failed"


@dataclasses.dataclass(frozen=True)
class ProcessSample:
    """One process as last seen. ``cpu_percent`` and ``rss`` are None when unknown."""

    key: int
    name: str
    pid: int | None
    pool: str | None
    start_method: str
    state: str
    exitcode: int | None
    cpu_percent: float | None
    rss: int | None
    runtime: float | None
    task: str | None
    error: str | None

    @property
    def exit_status(self) -> str:
        return describe_exitcode(self.exitcode)


@dataclasses.dataclass(frozen=True)
class PoolSample:
    """Progress of one pool; ``rate`` is tasks ended per second, recently."""

    name: str
    processes: int
    start_method: str
    submitted: int
    done: int
    failed: int
    closed: bool
    rate: float


@dataclasses.dataclass(frozen=True)
class SystemSample:
    """The whole machine: CPU % per core and in total, memory."""

    cpu_percent: tuple[float, ...]
    cpu_total: float
    memory_percent: float
    memory_used: int
    memory_total: int


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything a dashboard shows at one moment."""

    time: float
    processes: tuple[ProcessSample, ...]
    pools: tuple[PoolSample, ...]
    system: SystemSample
    cpu_history: tuple[float, ...]
    memory_history: tuple[float, ...]
    sampler_cost: float

    def pool_workers(self, pool: str) -> tuple[ProcessSample, ...]:
        return tuple(p for p in self.processes if p.pool == pool)

    @property
    def standalone(self) -> tuple[ProcessSample, ...]:
        """Processes outside any pool (or whose pool is not recorded)."""
        names = {p.name for p in self.pools}
        return tuple(p for p in self.processes if p.pool not in names)

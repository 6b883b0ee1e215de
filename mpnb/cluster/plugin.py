"""A scheduler plugin: a task of an mpnb pool is never run again on another worker.

Dask reschedules a task whose worker died, up to ``distributed.scheduler.allowed-failures``
times (a setting of the whole scheduler), then raises ``KilledWorker``. A pool wants the
loss at once, as on one machine, without touching other users' tasks: when one of
mpnb's keys (``mpnb-...``) starts processing, its ``suspicious`` count is raised to the
limit, so that the first worker lost while it is there fails it with ``KilledWorker``
(which ``engine`` turns into ``WorkerCrashedError``, or submits again if it never ran).
Registered by each pool's client (``Client.register_plugin``, idempotent by name); the
scheduler needs mpnb installed, like the workers.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

__all__ = ["NoRetry", "KEY_PREFIX"]

KEY_PREFIX = "mpnb-"


class NoRetry(SchedulerPlugin):
    """No silent retry of mpnb's tasks on another worker (see the module docstring)."""

    name = "mpnb-no-retry"

    def __init__(self) -> None:
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish != "processing" or not isinstance(key, str) or not key.startswith(KEY_PREFIX):
            return
        scheduler = self.scheduler
        ts = scheduler.tasks.get(key) if scheduler is not None else None
        if ts is not None:
            ts.suspicious = max(ts.suspicious, scheduler.allowed_failures)

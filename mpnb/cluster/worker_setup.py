"""Preloaded in each worker process of a ``cluster="local"`` pool (Dask's ``preload``).

The workers of a ``LocalCluster`` are in the kernel's process group, so the kernel's
interrupt (SIGINT to the group) would kill them. An interrupt is the kernel's: the
pool cancels its tasks itself, so the workers ignore SIGINT.
"""

from __future__ import annotations

import signal
from typing import Any

__all__ = ["dask_setup"]


def dask_setup(worker: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)

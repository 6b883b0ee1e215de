"""The workloads, in table order."""

from __future__ import annotations

from . import cluster, data, faults, notebook, recording, speed
from .base import Case, CaseFailure, Target, Workload

WORKLOADS: dict[str, Workload] = {
    w.id: w
    for w in (
        *speed.WORKLOADS,
        *data.WORKLOADS,
        *faults.WORKLOADS,
        *notebook.WORKLOADS,
        *recording.WORKLOADS,
        *cluster.WORKLOADS,
    )
}
# Table order: by number.
WORKLOADS = dict(sorted(WORKLOADS.items(), key=lambda item: int(item[0][1:])))

__all__ = ["WORKLOADS", "Case", "CaseFailure", "Target", "Workload"]

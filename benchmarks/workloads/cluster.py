"""W13: mpnb's ``Pool(cluster=...)`` against raw ``Client.map``/``gather`` on Dask.

The same ``LocalCluster`` (2 worker processes of one thread, loopback) under both:
W3's map of ``x + 1`` (fewer items: raw Dask makes one task per item), W4's pipelined
single tasks, and W5's CPU-bound tasks (speed-up over serial). Every figure is seconds
per run, so that one ratio reads the same way for all three.
"""

from __future__ import annotations

from typing import Any

from .. import harness, peers
from ..harness import now
from .base import Case, CaseFailure, Target, Workload, find, median
from .speed import W5_TASKS, _fmt, _time_spin, calibrate_spin

W13_WORKERS = 2
W13_MAP_ITEMS = 5_000
W13_TASKS = 500

VARIANTS = ("map", "tasks", "cpu")


def run_w13(c: Case) -> None:
    inc = c.fn("inc")
    spin_item = c.fn("spin_item")
    n = int(c.params["spin_n"])
    rows = {v: c.row(v) for v in VARIANTS}
    items = list(range(W13_MAP_ITEMS))
    expected = [x + 1 for x in items]
    speedups: list[float] = []
    with c.peer.pool(W13_WORKERS) as pool:
        with c.stage(60, rows["map"], "first map"):
            pool.map(inc, items[:100])

        def a_map() -> float:
            t0 = now()
            if list(pool.map(inc, items)) != expected:
                raise CaseFailure("wrong result")
            return now() - t0

        def tasks() -> float:
            t0 = now()
            pending = [pool.submit(inc, i) for i in range(W13_TASKS)]
            if [p.result(60) for p in pending] != [i + 1 for i in range(W13_TASKS)]:
                raise CaseFailure("wrong result")
            return now() - t0

        def cpu() -> float:
            serial = sum(_time_spin(n) for _ in range(2)) / 2 * W5_TASKS
            t0 = now()
            result = pool.map(spin_item, [(i, n) for i in range(W5_TASKS)])
            elapsed = now() - t0
            if list(result) != list(range(W5_TASKS)):
                raise CaseFailure("wrong result")
            speedups.append(serial / elapsed)
            return elapsed

        budget = c.budget / 3
        c.finish(rows["map"], harness.repeat_timed(a_map, c.repeat, budget), items=len(items))
        c.finish(rows["tasks"], harness.repeat_timed(tasks, c.repeat, budget), items=W13_TASKS)
        samples = harness.repeat_timed(cpu, c.repeat, budget)
        speedups.sort()
        c.finish(rows["cpu"], samples, items=W5_TASKS, speedup=speedups[len(speedups) // 2])


def targets_w13(rows: list[dict[str, Any]]) -> list[Target]:
    out = []
    for variant in VARIANTS:
        mine = median(find(rows, "mpnb:dask", variant))
        raw = median(find(rows, "dask:raw", variant))
        ratio = mine / raw if mine and raw else None
        out.append(
            Target(
                f"mpnb <= 1.1x raw Dask ({variant})",
                _fmt(ratio, "x raw"),
                None if ratio is None else ratio <= 1.1,
            )
        )
    cpu = find(rows, "mpnb:dask", "cpu")
    speedup = (cpu or {}).get("speedup", (cpu or {}).get("extra", {}).get("speedup"))
    out.append(
        Target(
            f"mpnb speed-up >= 1.9 on {W13_WORKERS} workers (cpu)",
            _fmt(speedup, "x"),
            None if speedup is None else speedup >= 1.9,
        )
    )
    return out


W13 = Workload(
    id="W13",
    title=f"Pool(cluster=...) vs raw Client.map/gather, LocalCluster of {W13_WORKERS}",
    unit="s/run",
    better="lower",
    run=run_w13,
    cases=tuple((p, "import") for p in peers.CLUSTER),
    repeat=5,
    budget=45,
    timeout=240,
    columns=(("items", "items", "d"), ("speedup", "speed-up", ".3g")),
    targets=targets_w13,
    params=calibrate_spin,
    note=f"map: {W13_MAP_ITEMS:,} x+1 (mpnb chunks as Pool.map does, raw Dask one task "
    f"per item); tasks: {W13_TASKS} submits then results; cpu: {W5_TASKS} tasks of "
    "~0.25 s (speed-up over serial in its column)",
)

WORKLOADS = (W13,)

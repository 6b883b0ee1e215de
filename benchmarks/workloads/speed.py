"""W1-W5: starting processes and pools, throughput, latency, CPU scaling."""

from __future__ import annotations

import os
from typing import Any

from .. import harness, peers, tasks
from ..harness import now
from .base import Case, CaseFailure, Target, Workload, find, median

# Sizes of the workloads, as BENCHMARKS.md states them.
W1_PROCESSES = 8
W3_ITEMS = 100_000
W4_TASKS = 2_000
W5_TASKS = 16
W5_TASK_SECONDS = 0.25


def _with_cell(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Each peer with the importable functions, then each again with cell-defined ones."""
    return tuple((p, "import") for p in names) + tuple((p, "cell") for p in names)


def _best(
    rows: list[dict[str, Any]], variant: str, better: str, keep: Any = lambda r: True
) -> tuple[str | None, float | None]:
    best_peer, best = None, None
    for r in rows:
        if r["variant"] != variant or r["peer"] in peers.MPNB or r["peer"] == "serial":
            continue
        value = median(r)
        if value is None or not keep(r):
            continue
        if best is None or (value < best if better == "lower" else value > best):
            best_peer, best = r["peer"], value
    return best_peer, best


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3g}{unit}"


# -- W1 ---------------------------------------------------------------------------------


def run_w1(c: Case) -> None:
    ctx = c.peer.context()
    noop = c.fn("noop")
    row = c.row()

    def batch() -> float:
        t0 = now()
        procs = [ctx.Process(target=noop) for _ in range(W1_PROCESSES)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        elapsed = now() - t0
        codes = [p.exitcode for p in procs]
        if any(code != 0 for code in codes):
            raise CaseFailure(f"children exited with {sorted(set(map(str, codes)))}")
        return elapsed / W1_PROCESSES * 1e3

    with c.stage(40, row, "first batch of processes"):
        cold = batch()
    c.finish(row, harness.repeat_timed(batch, c.repeat, c.budget), cold_ms=cold)


def targets_w1(rows: list[dict[str, Any]]) -> list[Target]:
    mine = median(find(rows, "mpnb", "import"))
    fork = median(find(rows, "mp:fork", "import"))
    spawn = median(find(rows, "mp:spawn", "import"))
    out = []
    ratio = mine / fork if mine and fork else None
    out.append(
        Target(
            "mpnb <= 1.5x stdlib fork",
            _fmt(ratio, "x fork"),
            None if ratio is None else ratio <= 1.5,
        )
    )
    speedup = spawn / mine if mine and spawn else None
    out.append(
        Target(
            "mpnb >= 3x faster than stdlib spawn",
            _fmt(speedup, "x faster"),
            None if speedup is None else speedup >= 3,
        )
    )
    return out


W1 = Workload(
    id="W1",
    title=f"start+join {W1_PROCESSES} Process(target=noop)",
    unit="ms/process",
    better="lower",
    run=run_w1,
    cases=_with_cell(peers.PROCESS_API),
    repeat=7,
    budget=8,
    timeout=60,
    columns=(("cold_ms", "first batch", ".3g"),),
    targets=targets_w1,
    note="the first batch (cold: a forkserver starts) is not in the median",
)


# -- W2 ---------------------------------------------------------------------------------


def run_w2(c: Case) -> None:
    inc = c.fn("inc")
    row = c.row()

    def cold_pool() -> float:
        t0 = now()
        with c.peer.pool(2) as pool:
            result = pool.map(inc, [1])
        c.peer.shutdown()
        elapsed = now() - t0
        if list(result) != [2]:
            raise CaseFailure(f"wrong result {result!r}")
        return elapsed * 1e3

    with c.stage(40, row, "first pool"):
        first = cold_pool()
    c.finish(row, harness.repeat_timed(cold_pool, c.repeat, c.budget), first_ms=first)


def targets_w2(rows: list[dict[str, Any]]) -> list[Target]:
    mine = median(find(rows, "mpnb", "import"))
    best_peer, best = _best(
        rows, "import", "lower", keep=lambda r: peers.start_method(r["peer"]) != "fork"
    )
    ratio = mine / best if mine and best else None
    return [
        Target(
            "mpnb <= best peer other than fork",
            f"{_fmt(ratio, 'x')} {best_peer or ''}".strip(),
            None if ratio is None else ratio <= 1.0,
        )
    ]


W2 = Workload(
    id="W2",
    title="cold pool: create 2 workers, one trivial task, shut down",
    unit="ms",
    better="lower",
    run=run_w2,
    cases=tuple((p, "import") for p in peers.POOLS),
    repeat=5,
    budget=10,
    timeout=90,
    columns=(("first_ms", "first pool", ".3g"),),
    targets=targets_w2,
    note="shut down = the pool's with-block exit, then stopping what a reusable pool keeps "
    "(loky, joblib's executor, the dask cluster); the first pool of a case (imports, "
    "forkserver start) is not in the median",
)


# -- W3 ---------------------------------------------------------------------------------


def run_w3(c: Case) -> None:
    inc = c.fn("inc")
    items = list(range(W3_ITEMS))
    expected = [x + 1 for x in items]
    row = c.row()
    with c.peer.pool(2) as pool:
        # A cell-defined function that the workers cannot load hangs some pools here.
        with c.stage(10 if c.variant == "cell" else 25, row, "first map"):
            pool.map(inc, items[:1000])

        def once() -> float:
            t0 = now()
            result = pool.map(inc, items)
            elapsed = now() - t0
            if list(result) != expected:
                raise CaseFailure("wrong result")
            return W3_ITEMS / elapsed

        c.finish(row, harness.repeat_timed(once, c.repeat, c.budget))


def targets_w3(rows: list[dict[str, Any]]) -> list[Target]:
    out = []
    for variant in ("import", "cell"):
        mine = median(find(rows, "mpnb", variant))
        best_peer, best = _best(rows, variant, "higher")
        ratio = mine / best if mine and best else None
        out.append(
            Target(
                f"mpnb >= best peer ({variant})",
                f"{_fmt(ratio, 'x')} {best_peer or ''}".strip(),
                None if ratio is None else ratio >= 1.0,
            )
        )
    return out


W3 = Workload(
    id="W3",
    title=f"map(x+1) over {W3_ITEMS:,} ints, natural batching, warm pool of 2",
    unit="tasks/s",
    better="higher",
    run=run_w3,
    cases=(("serial", "import"),) + _with_cell(peers.POOLS),
    repeat=5,
    budget=12,
    timeout=90,
    targets=targets_w3,
    note="cell = the function defined in a notebook cell (IPython shell, __main__); "
    "a slow peer gets fewer repeats within the time budget",
)


# -- W4 ---------------------------------------------------------------------------------


def run_w4(c: Case) -> None:
    if not c.peer.has_submit:
        raise peers.NotSupported("no single-task API")
    inc = c.fn("inc")
    rt_row, pipe_row = c.row("round-trip"), c.row("pipelined")
    with c.peer.pool(2) as pool:
        with c.stage(25, rt_row, "first task"):
            for i in range(20):
                pool.submit(inc, i).result(10)
        t0 = now()
        for i in range(50):
            pool.submit(inc, i).result(10)
        per_task = (now() - t0) / 50
        # A slow peer sends fewer tasks, so that one sample takes at most an eighth of the
        # budget and each figure gets several samples.
        n = W4_TASKS
        if per_task * n > c.budget / 8:
            n = max(100, int(c.budget / 8 / per_task))

        def round_trip() -> float:
            t0 = now()
            for i in range(n):
                if pool.submit(inc, i).result(30) != i + 1:
                    raise CaseFailure("wrong result")
            return (now() - t0) / n * 1e6

        def pipelined() -> float:
            t0 = now()
            pending = [pool.submit(inc, i) for i in range(n)]
            results = [p.result(60) for p in pending]
            elapsed = now() - t0
            if results != [i + 1 for i in range(n)]:
                raise CaseFailure("wrong result")
            return elapsed / n * 1e6

        c.finish(rt_row, harness.repeat_timed(round_trip, c.repeat, c.budget / 2), tasks=n)
        c.finish(pipe_row, harness.repeat_timed(pipelined, c.repeat, c.budget / 2), tasks=n)


def targets_w4(rows: list[dict[str, Any]]) -> list[Target]:
    out = []
    for variant in ("round-trip", "pipelined"):
        mine = median(find(rows, "mpnb", variant))
        best_peer, best = _best(rows, variant, "lower")
        ratio = mine / best if mine and best else None
        out.append(
            Target(
                f"mpnb <= best peer ({variant})",
                f"{_fmt(ratio, 'x')} {best_peer or ''}".strip(),
                None if ratio is None else ratio <= 1.0,
            )
        )
    return out


W4 = Workload(
    id="W4",
    title=f"{W4_TASKS:,} single tasks (apply_async/submit), warm pool of 2",
    unit="us/task",
    better="lower",
    run=run_w4,
    cases=tuple((p, "import") for p in ("serial",) + peers.POOLS),
    repeat=5,
    budget=14,
    timeout=90,
    columns=(("tasks", "tasks", "d"),),
    targets=targets_w4,
    note="round-trip: submit, wait, next; pipelined: submit all, then collect; "
    "joblib has no single-task API; a slow peer runs fewer tasks (column 'tasks')",
)


# -- W5 ---------------------------------------------------------------------------------


def calibrate_spin(seconds: float = W5_TASK_SECONDS) -> dict[str, Any]:
    """The ``spin`` size that takes ``seconds`` here (best of a few tries)."""
    n = 200_000
    best = min(_time_spin(n) for _ in range(5))
    return {"spin_n": max(1, int(n * seconds / best)), "cores": os.cpu_count() or 1}


def _time_spin(n: int) -> float:
    t0 = now()
    tasks.spin(n)
    return now() - t0


def run_w5(c: Case) -> None:
    n = int(c.params["spin_n"])
    cores = int(c.params["cores"])
    spin_item = c.fn("spin_item")
    items = [(i, n) for i in range(W5_TASKS)]
    row = c.row()
    parallel_s: list[float] = []
    with c.peer.pool(cores) as pool:
        with c.stage(30, row, "first map"):
            pool.map(spin_item, [(i, n // 20) for i in range(cores * 2)])

        def once() -> float:
            # The serial reference is taken now, under the machine's load of the moment.
            serial = sum(_time_spin(n) for _ in range(2)) / 2 * W5_TASKS
            t0 = now()
            result = pool.map(spin_item, items)
            elapsed = now() - t0
            if list(result) != list(range(W5_TASKS)):
                raise CaseFailure("wrong result")
            parallel_s.append(elapsed)
            return serial / elapsed

        samples = harness.repeat_timed(once, c.repeat, c.budget)
    c.finish(row, samples, parallel_s=min(parallel_s), workers=cores)


def targets_w5(rows: list[dict[str, Any]]) -> list[Target]:
    mine = median(find(rows, "mpnb", "import"))
    cores = os.cpu_count() or 1
    goal = 0.95 * cores
    return [
        Target(
            f"mpnb speed-up >= 0.95 x cores ({goal:.2g})",
            _fmt(mine, "x"),
            None if mine is None else mine >= goal,
        )
    ]


W5 = Workload(
    id="W5",
    title=f"{W5_TASKS} CPU-bound tasks of ~{W5_TASK_SECONDS} s on all cores",
    unit="x serial",
    better="higher",
    run=run_w5,
    cases=tuple((p, "import") for p in ("serial",) + peers.POOLS),
    repeat=3,
    budget=14,
    timeout=120,
    columns=(("parallel_s", "best s", ".3g"), ("workers", "workers", "d")),
    targets=targets_w5,
    params=calibrate_spin,
    note="speed-up = (16 x one task timed serially just before) / the map's time",
)

WORKLOADS = (W1, W2, W3, W4, W5)

"""W14: what recording the task timeline costs: W3 with ``mpnb.timeline`` on and off."""

from __future__ import annotations

import statistics
from typing import Any

from .. import peers
from ..harness import now
from .base import Case, CaseFailure, Target, Workload, find, median
from .speed import W3_ITEMS

#: chunk sizes per variant: W3's own (the pool's default, a few chunks per worker) and
#: one task per item, the worst case for recording (a record per item)
CHUNKSIZE = {"natural": None, "per-item": 1}


def record_cost(n: int = 200_000) -> float:
    """Seconds the engine spends per task result on recording it, measured directly:
    the same steps (the switch, reading the start, the tuple, the append to a full
    ring) on the same kinds of objects, best of 5."""
    from mpnb._pool.protocol import APPLY, parse_result
    from mpnb.timeline.record import LABEL_SECONDS, Recorder

    class _Task:
        __slots__ = ("job", "mode", "start", "count", "label", "func_name")

    class _Job:
        id = 1

    task = _Task()
    task.job, task.mode, task.start, task.count, task.func_name = _Job(), 1, 0, 1, "inc"
    task.label = "inc(0)"
    recorder = Recorder("W14", limit=1000)
    msg = (1, 1, [1], [], 1e-6, 123.0)
    errs: list[Any] = []
    seconds = 1e-6
    lane = 0
    best = float("inf")
    for _ in range(5):
        t0 = now()
        for _ in range(n):
            values, errors, seconds, started = parse_result(msg)
            if recorder.on:
                apply = task.mode == APPLY
                recorder.raw.append(
                    (
                        task.job.id,
                        lane,
                        started or now() - seconds,
                        seconds,
                        None if apply else task.start,
                        task.count,
                        len(errs),
                        task.label if apply and seconds >= LABEL_SECONDS else task.func_name,
                        None,
                        None,
                    )
                )
        t1 = now()
        for _ in range(n):  # the loop and parse_result alone
            values, errors, seconds, started = parse_result(msg)
        best = min(best, (t1 - t0) - (now() - t1))
    return best / n


def run_w14(c: Case) -> None:
    try:
        from mpnb import timeline
    except ImportError as exc:
        raise peers.Unavailable("mpnb.timeline does not exist") from exc
    inc = c.fn("inc")
    items = list(range(W3_ITEMS))
    expected = [x + 1 for x in items]
    chunksize = CHUNKSIZE[c.variant]
    row = c.row()
    slowdown: list[float] = []
    walls: dict[bool, list[float]] = {False: [], True: []}
    records: list[int] = []
    with c.peer.pool(2) as handle:
        pool = getattr(handle, "pool", None)
        if pool is None or not callable(getattr(pool, "timeline", None)):
            raise peers.NotSupported("not an mpnb pool")
        with c.stage(25, row, "first map"):
            pool.map(inc, items[:1000])

        def timed(on: bool) -> float:
            timeline.set_recording(on)
            try:
                t0 = now()
                result = pool.map(inc, items, chunksize)
                elapsed = now() - t0
            finally:
                timeline.set_recording(True)
            if result != expected:
                raise CaseFailure("wrong result")
            if on:
                records.append(len(pool.timeline(last_run=True).tasks))
            walls[on].append(elapsed)
            return elapsed

        start = now()
        for i in range(max(3, c.repeat)):
            # Alternate which goes first, so a drift of the machine's load cancels out.
            if i % 2 == 0:
                off, on = timed(False), timed(True)
            else:
                on, off = timed(True), timed(False)
            slowdown.append((on - off) / off * 100)
            if now() - start > c.budget and i >= 2:
                break
    cost = record_cost()
    off_s = statistics.median(walls[False])
    c.finish(
        row,
        slowdown,
        off_s=off_s,
        on_s=statistics.median(walls[True]),
        records=statistics.median(records),
        record_us=cost * 1e6,
        estimate_pct=100 * cost * statistics.median(records) / off_s,
    )


def targets_w14(rows: list[dict[str, Any]]) -> list[Target]:
    out = []
    for variant in CHUNKSIZE:
        found = find(rows, "mpnb", variant)
        mine = median(found)
        estimate = found.get("extra", {}).get("estimate_pct") if found else None
        measured = "n/a" if mine is None else f"{mine:.2g}% measured"
        if estimate is not None:
            measured += f", {estimate:.2g}% estimated"
        # The machine's noise (several % between two identical maps) swamps a cost this
        # small: the estimate decides where there is one.
        figure = estimate if estimate is not None else mine
        out.append(
            Target(
                f"slow-down with the timeline recording <= 1% ({variant})",
                measured,
                None if figure is None else figure <= 1,
            )
        )
    return out


W14 = Workload(
    id="W14",
    title=f"W3 (map(x+1) over {W3_ITEMS:,} ints, pool of 2) with the task timeline recording",
    unit="% slow-down",
    better="lower",
    run=run_w14,
    cases=(("mpnb", "natural"), ("mpnb", "per-item")),
    repeat=7,
    budget=40,
    timeout=240,
    columns=(
        ("off_s", "without s", ".3g"),
        ("on_s", "with s", ".3g"),
        ("records", "records", ".0f"),
        ("record_us", "µs/record", ".2g"),
        ("estimate_pct", "est. %", ".2g"),
    ),
    targets=targets_w14,
    ratio=False,
    note="pairs of maps with mpnb.timeline.set_recording(False) and (True), alternating "
    "which goes first; per-item: chunksize=1, one record per item (the worst case); "
    "est. % = records x µs/record (the engine's recording steps timed alone) / time "
    "without: the cost free of the machine's noise",
)

WORKLOADS = (W14,)

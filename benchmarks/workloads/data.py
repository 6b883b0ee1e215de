"""W6 and W9: moving data, a big numpy array to a worker and many small items through a
Queue."""

from __future__ import annotations

import statistics
from typing import Any

from .. import harness, peers
from ..harness import now
from .base import Case, CaseFailure, Target, Workload, call_one, find, median

W6_BYTES = 256 * 2**20
W9_ITEMS = 100_000
MB = 2**20


# -- W6 ---------------------------------------------------------------------------------


def run_w6(c: Case) -> None:
    import numpy as np

    array_sum = c.fn("array_sum")
    array = np.random.default_rng(0).random(W6_BYTES // 8)
    expected = float(array.sum())
    warm = array[: 2**18].copy()  # 2 MB: big enough for joblib's memmapping to start
    row = c.row()
    rss: list[float] = []
    total: list[float] = []
    with c.peer.pool(2) as pool:
        with c.stage(30, row, "first task"):
            call_one(pool, array_sum, warm, 30)

        def once() -> float:
            with harness.MemorySampler() as sampler:
                t0 = now()
                result = call_one(pool, array_sum, array, 120)
                elapsed = now() - t0
            if abs(result - expected) > 1e-6 * abs(expected):
                raise CaseFailure(f"wrong sum {result!r}, expected {expected!r}")
            rss.append(sampler.result.rss_growth / MB)
            total.append(sampler.result.pss_growth / MB)
            return elapsed * 1e3

        samples = harness.repeat_timed(once, c.repeat, c.budget)
    c.finish(
        row, samples, rss_growth_mb=statistics.median(rss), mem_growth_mb=statistics.median(total)
    )


def targets_w6(rows: list[dict[str, Any]]) -> list[Target]:
    mine_row = find(rows, "mpnb", "import")
    mine = median(mine_row)
    stdlib = [
        m
        for m in (median(find(rows, p, "import")) for p in ("mp:fork", "mp:forkserver", "mp:spawn"))
        if m
    ]
    ratio = mine / min(stdlib) if mine and stdlib else None
    out = [
        Target(
            "mpnb time <= 0.1x stdlib",
            "n/a" if ratio is None else f"{ratio:.3g}x",
            None if ratio is None else ratio <= 0.1,
        )
    ]
    growth = (mine_row or {}).get("extra", {}).get("rss_growth_mb") if mine else None
    limit = 0.2 * W6_BYTES / MB
    out.append(
        Target(
            f"mpnb peak RSS growth <= 0.2x the array ({limit:.0f} MB)",
            "n/a" if growth is None else f"{growth:.0f} MB",
            None if growth is None else growth <= limit,
        )
    )
    return out


W6 = Workload(
    id="W6",
    title="a 256 MB float64 numpy array to a worker, return its sum",
    unit="ms",
    better="lower",
    run=run_w6,
    cases=tuple((p, "import") for p in ("serial",) + peers.POOLS),
    repeat=3,
    budget=15,
    timeout=120,
    columns=(("rss_growth_mb", "RSS+ MB", ".0f"), ("mem_growth_mb", "PSS+shm+ MB", ".0f")),
    targets=targets_w6,
    note="RSS+ = peak growth of the summed RSS of the process tree (a page mapped by two "
    "processes counts twice); PSS+shm+ = peak growth of the summed PSS plus /dev/shm "
    "in use (each page once; /dev/shm is shared by the machine, so it is noisy)",
)


# -- W9 ---------------------------------------------------------------------------------


def run_w9(c: Case) -> None:
    ctx = c.peer.context()
    echo = c.fn("queue_echo")
    items = [{"i": i, "name": f"item-{i}", "value": i * 0.5} for i in range(W9_ITEMS)]
    row = c.row()
    inbox, outbox = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=echo, args=(inbox, outbox))
    child.start()
    try:
        with c.stage(30, row, "first items"):
            for item in items[:1000]:
                inbox.put(item)
            for _ in range(1000):
                outbox.get()

        def once() -> float:
            t0 = now()
            for item in items:
                inbox.put(item)
            received = [outbox.get() for _ in range(W9_ITEMS)]
            elapsed = now() - t0
            if received[-1] != items[-1] or received[W9_ITEMS // 2] != items[W9_ITEMS // 2]:
                raise CaseFailure("items came back wrong")
            return elapsed

        c.finish(row, harness.repeat_timed(once, c.repeat, c.budget))
    finally:
        inbox.put(None)
        child.join(10)
        if child.is_alive():
            child.terminate()
            child.join(5)
        for q in (inbox, outbox):
            q.close()
            q.join_thread()


def targets_w9(rows: list[dict[str, Any]]) -> list[Target]:
    out = []
    for mine_peer, stdlib_peer in (("mpnb", None), ("mpnb:spawn", "mp:spawn")):
        mine = median(find(rows, mine_peer, "import"))
        if stdlib_peer is None:
            # mpnb's default context against the stdlib with the same start method.
            method = (find(rows, mine_peer, "import") or {}).get("start_method") or "forkserver"
            stdlib_peer = f"mp:{method}"
        ref = median(find(rows, stdlib_peer, "import"))
        ratio = mine / ref if mine and ref else None
        out.append(
            Target(
                f"{mine_peer} <= 1.1x {stdlib_peer}",
                "n/a" if ratio is None else f"{ratio:.3g}x",
                None if ratio is None else ratio <= 1.1,
            )
        )
    return out


W9 = Workload(
    id="W9",
    title=f"{W9_ITEMS:,} small dicts through a Queue to a child and back",
    unit="s",
    better="lower",
    run=run_w9,
    cases=tuple((p, "import") for p in peers.PROCESS_API),
    repeat=5,
    budget=15,
    timeout=90,
    targets=targets_w9,
    note="one child echoes a Queue into another; the parent puts all, "
    "then gets all; only peers with a Queue",
)

WORKLOADS = (W6, W9)

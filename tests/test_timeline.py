"""The timeline of real pools, executors and processes: what was recorded (outcomes,
one record per task or chunk, a lane per worker), and how it shows (SVG/HTML, text,
Chrome trace)."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

import mpnb
from mpnb import timeline
from mpnb.timeline import CANCELLED, CRASHED, ERROR, OK, Timeline

pytestmark = [pytest.mark.core, pytest.mark.timeout(90)]

FAIL, CRASH = 3, 5


def fail_or_crash(x):
    if x == FAIL:
        raise ValueError(f"bad item {x}")
    if x == CRASH:
        os._exit(7)
    time.sleep(0.02)
    return x


def slow_at_8(x):
    time.sleep(0.4 if x == 8 else 0.02)
    return x


def inc(x):
    return x + 1


def _drain(iterator, n):
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except Exception as exc:
            out.append(type(exc).__name__)
    return out


def _svg_lanes(markup: str) -> int:
    return len(re.findall(r'<g class="mpnb-lane"', markup))


def test_outcomes_records_and_lanes(ctx, tmp_path):
    with ctx.Pool(2) as pool:
        out = _drain(pool.imap(fail_or_crash, range(10)), 10)
        assert out[FAIL] == "ValueError" and out[CRASH] == "WorkerCrashedError"
        tl = pool.timeline()
    assert isinstance(tl, Timeline)
    by_item = {t.item: t for t in tl.tasks}
    assert sorted(by_item) == list(range(10)), "one record per item"
    assert len(tl.tasks) == 10
    assert by_item[FAIL].outcome == ERROR and by_item[FAIL].errors == 1
    assert by_item[CRASH].outcome == CRASHED and by_item[CRASH].exitcode == 7
    assert {t.outcome for i, t in by_item.items() if i not in (FAIL, CRASH)} == {OK}
    for t in tl.tasks:
        assert t.end >= t.start and t.count == 1 and t.label == "fail_or_crash"
    # A lane per worker that ran something: the two first, and the one that replaced
    # the worker that died.
    pids = {t.pid for t in tl.tasks}
    assert len(tl.lanes) == len(pids) == 3
    assert all(str(t.pid) in t.lane for t in tl.tasks)
    crashed_pid = by_item[CRASH].pid
    assert all(t.start <= by_item[CRASH].end for t in tl.tasks if t.pid == crashed_pid)

    # Chrome trace: valid JSON, one complete event per task, a named thread per lane.
    path = tl.to_chrome_trace(tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == len(tl.tasks)
    assert {e["args"]["item"] for e in complete} == set(range(10))
    assert {e["args"]["outcome"] for e in complete} == {OK, ERROR, CRASHED}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in complete)
    names = [e for e in trace["traceEvents"] if e["name"] == "thread_name"]
    assert sorted(e["args"]["name"] for e in names) == sorted(tl.lanes)
    assert {e["tid"] for e in complete} == {e["tid"] for e in names}

    # SVG/HTML: a lane per worker, a bar per task with its hover text; red, crashed.
    markup = tl._repr_html_()
    assert _svg_lanes(markup) == 3
    assert markup.count('class="mpnb-task') == 10
    assert markup.count("mpnb-error") == 1 and markup.count("mpnb-crashed") == 1
    assert f"item {CRASH} of fail_or_crash" in markup and "<title>" in markup
    assert "<script" not in markup

    # Text: the summary, then a row per lane with its marks.
    text = repr(tl)
    lines = text.splitlines()
    assert "10 tasks" in lines[0] and "1 crashed" in lines[0] and "1 item failed" in lines[0]
    rows = [line for line in lines if line.endswith("|")]
    assert len(rows) == 3
    assert "X" in "".join(rows) and "E" in "".join(rows)


def test_chunks_are_one_record_each():
    with mpnb.Pool(2) as pool:
        assert pool.map(inc, range(100), chunksize=25) == list(range(1, 101))
        tl = pool.timeline(last_run=True)
    assert sorted((t.item, t.count) for t in tl.tasks) == [(0, 25), (25, 25), (50, 25), (75, 25)]
    assert all(t.outcome == OK for t in tl.tasks)
    assert "items 0-24 of inc" in tl._repr_html_()


def test_last_run_and_stragglers():
    with mpnb.Pool(2) as pool:
        pool.map(inc, range(4), chunksize=1)
        pool.map(slow_at_8, range(10), chunksize=1)
        run = timeline.last_run()
        everything = pool.timeline()
    assert len(everything.tasks) == 14
    assert [t.item for t in sorted(run.tasks, key=lambda t: t.item)] == list(range(10))
    assert run.title.endswith("last run")
    assert [t.item for t in run.stragglers()] == [8]
    assert "slowest: item 8 of slow_at_8" in run.summary()


def test_executor_timeline():
    with mpnb.ProcessPoolExecutor(2) as executor:
        futures = [executor.submit(fail_or_crash, x) for x in (1, FAIL, 2)]
        for f in futures:
            f.exception(30)
        tl = executor.timeline()
    assert sorted(t.outcome for t in tl.tasks) == [ERROR, OK, OK]
    assert all(t.item is None and t.label == "fail_or_crash" for t in tl.tasks)
    assert len(tl.lanes) <= 2


def test_cancelled_task_is_grey():
    with mpnb.Pool(1) as pool:
        result = pool.map_async(time.sleep, [5])
        deadline = time.monotonic() + 20
        while not any(w.process.pid for w in pool._core._workers) or not pool._core._words[0]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        pool.terminate()
        with pytest.raises(mpnb.TaskCancelledError):
            result.get(10)
        tl = pool.timeline()
    assert [t.outcome for t in tl.tasks] == [CANCELLED]
    assert "mpnb-cancelled" in tl._repr_html_() and "1 cancelled" in tl.summary()


def test_process_lanes():
    procs = [mpnb.Process(target=time.sleep, args=(0.1,)) for _ in range(2)]
    procs.append(mpnb.Process(target=os._exit, args=(3,)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    tl = timeline.processes()
    mine = [t for t in tl.tasks if t.pid in {p.pid for p in procs}]
    assert len(mine) == 3
    assert sorted(t.outcome for t in mine) == [ERROR, OK, OK]
    assert [t.exitcode for t in mine if t.outcome == ERROR] == [3]
    assert all(t.duration > 0 for t in mine)


def test_recording_off():
    assert timeline.recording()
    timeline.set_recording(False)
    try:
        with mpnb.Pool(1) as pool:
            pool.map(inc, range(5))
            assert pool.timeline().tasks == []
            assert "no tasks recorded" in repr(pool.timeline())
    finally:
        timeline.set_recording(True)
    assert timeline.recording()


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="True or False"):
        timeline.set_recording("no")  # type: ignore[arg-type]
    with mpnb.Pool(1) as pool:
        with pytest.raises(TypeError, match="last_run"):
            pool.timeline(last_run="yes")  # type: ignore[arg-type]
        pool.map(inc, range(2))
        with pytest.raises(IsADirectoryError, match="is a folder"):
            pool.timeline().to_chrome_trace(tmp_path)
        with pytest.raises(TypeError, match="file path"):
            pool.timeline().to_chrome_trace(3)  # type: ignore[arg-type]


def test_many_tasks_merge_into_few_bars():
    with mpnb.Pool(2) as pool:
        pool.map(inc, range(6000), chunksize=1)
        tl = pool.timeline()
    assert len(tl.tasks) == 6000
    markup = tl.svg()
    bars = markup.count('class="mpnb-task')
    assert 2 <= bars < 6000
    assert _svg_lanes(markup) == 2


def test_records_keep_no_process_alive():
    """A recorded lane is a name: dead workers' process objects (and the file descriptors
    of their sentinels) go, however many the pool replaced."""
    import gc

    with mpnb.Pool(1, maxtasksperchild=1) as pool:
        pool.map(inc, range(3), chunksize=1)
        gc.collect()
        fds = len(os.listdir("/proc/self/fd"))
        pool.map(inc, range(30), chunksize=1)
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) < fds + 10
        assert len(pool.timeline().lanes) == 33


def test_text_keeps_a_short_failure_beside_a_crash_in_its_column():
    from mpnb.timeline import TaskRecord

    def record(item: int, start: float, end: float, outcome: str) -> TaskRecord:
        return TaskRecord("w-1", 1, 11, start, end, outcome, item, 1, 0, "f", 1)

    # An error of 0.4 ms right before a crash, on a 330 ms chart: one column for both.
    tl = Timeline(
        [
            record(0, 0.0, 0.02, OK),
            record(3, 0.0407, 0.0411, ERROR),
            record(5, 0.0411, 0.047, CRASHED),
            record(6, 0.313, 0.333, OK),
        ]
    )
    (row,) = [line for line in tl.text().splitlines() if line.endswith("|")]
    assert "E" in row and "X" in row

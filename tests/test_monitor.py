"""The monitor's sampler on real processes, its renderings, the dashboard and ``%mp_monitor``."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from mpnb.dashboard import snapshot as monitor_module
from mpnb.dashboard.sampler import Sampler, running_samplers, stop_all
from mpnb.dashboard.snapshot import Snapshot, describe_exitcode
from mpnb.dashboard.views import render_html, render_text
from mpnb.dashboard.widget import Dashboard
from mpnb.registry import Registry

pytestmark = pytest.mark.timeout(120)

CTX = multiprocessing.get_context("forkserver")


def spin(seconds: float) -> None:
    """Keep one core busy (the target of a child process)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {condition}")
        time.sleep(step)


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def children():
    """Processes started by a test; any still running at its end are killed."""
    started: list[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(10)
    assert not any(p.is_alive() for p in started)


@pytest.fixture(autouse=True)
def no_sampler_left():
    yield
    left = running_samplers()
    stop_all()
    assert not left, "a sampler thread was left running"


def start(
    registry: Registry,
    children: list[Any],
    name: str,
    target: Any,
    *args: Any,
    pool: str | None = None,
) -> tuple[int, Any]:
    """Start a process the way mpnb's core does: record, start, record its pid."""
    process = CTX.Process(target=target, args=args, name=name)
    key = registry.add_process(name, "forkserver", pool=pool, handle=process)
    process.start()
    children.append(process)
    registry.update_process(key, pid=process.pid)
    return key, process


def row(snapshot: Snapshot, key: int) -> Any:
    return next(p for p in snapshot.processes if p.key == key)


def sample_until(sampler: Sampler, key: int, states: set[str], timeout: float = 30.0) -> Any:
    return wait_for(lambda: (r := row(sampler.sample(), key)).state in states and r, timeout)


# -- exit codes -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code, text",
    [
        (None, ""),
        (0, "0"),
        (1, "1"),
        (-9, "-9 SIGKILL"),
        (-15, "-15 SIGTERM"),
        (-200, "-200 signal 200"),
    ],
)
def test_describe_exitcode(code: int | None, text: str) -> None:
    assert describe_exitcode(code) == text


# -- the sampler on real processes ------------------------------------------------------
def test_states_from_starting_to_finished(registry: Registry, children: list[Any]) -> None:
    sampler = Sampler(registry=registry)
    process = CTX.Process(target=time.sleep, args=(1.0,), name="napper")
    key = registry.add_process("napper", "forkserver", handle=process)
    assert row(sampler.sample(), key).state == "starting"

    process.start()
    children.append(process)
    registry.update_process(key, pid=process.pid)
    alive = sample_until(sampler, key, {"sleeping", "running"})
    assert alive.pid == process.pid and alive.exitcode is None and alive.rss > 0

    done = sample_until(sampler, key, {"finished"})
    assert (done.exitcode, done.exit_status) == (0, "0")
    assert done.runtime is not None and done.cpu_percent is None
    assert process.exitcode == 0
    records, _ = registry.snapshot()
    assert [r.exitcode for r in records if r.key == key] == [0]
    assert not registry.live_handles()


def test_failed_and_killed(registry: Registry, children: list[Any]) -> None:
    sampler = Sampler(registry=registry)
    bad, _ = start(registry, children, "bad", int, "not a number")
    victim, process = start(registry, children, "victim", time.sleep, 600)
    sample_until(sampler, victim, {"sleeping", "running"})
    os.kill(process.pid, signal.SIGKILL)

    killed = sample_until(sampler, victim, {"killed"})
    failed = sample_until(sampler, bad, {"failed"})
    assert (killed.exitcode, killed.exit_status) == (-9, "-9 SIGKILL")
    assert (failed.exitcode, failed.exit_status) == (1, "1")
    assert process.exitcode == -9


def test_exit_code_the_core_wrote_is_kept(registry: Registry, children: list[Any]) -> None:
    key, process = start(registry, children, "joined", os._exit, 3)
    process.join(30)
    registry.update_process(key, exitcode=process.exitcode)
    assert row(Sampler(registry=registry).sample(), key).state == "failed"


def test_busy_process_is_running_with_cpu(registry: Registry, children: list[Any]) -> None:
    sampler = Sampler(registry=registry)
    key, _ = start(registry, children, "spinner", spin, 60.0)
    busy = wait_for(
        lambda: (
            (r := row(sampler.sample(), key)).state == "running" and (r.cpu_percent or 0) > 5 and r
        ),
        step=0.2,
    )
    assert busy.cpu_percent <= 100 * psutil.cpu_count() + 1


def test_exit_codes_survive_concurrent_joins(registry: Registry, children: list[Any]) -> None:
    # The sampler polls every 5 ms while the test joins: no exit code may be lost or
    # replaced (a forkserver status read twice would come back as 255).
    sampler = Sampler(0.005, registry=registry).start()
    try:
        for round_ in range(3):
            started = [start(registry, children, f"p{round_}-{i}", os._exit, i) for i in range(4)]
            for i, (_key, process) in enumerate(started):
                process.join(30)
                assert process.exitcode == i
            for i, (key, _process) in enumerate(started):
                wait_for(lambda key=key, i=i: row(sampler.latest, key).exitcode == i)
    finally:
        sampler.stop()


# -- with mpnb's own processes and pools -------------------------------------------------
def test_mpnb_processes_and_pool(children: list[Any]) -> None:
    import mpnb
    from mpnb.registry import REGISTRY

    ctx = mpnb.get_context("forkserver")
    sampler = Sampler()
    ok = ctx.Process(target=time.sleep, args=(0.1,), name="mpnb-ok")
    victim = ctx.Process(target=time.sleep, args=(600,), name="mpnb-victim")
    for p in (ok, victim):
        p.start()
        children.append(p)
    key_ok, key_victim = ok._mpnb_key, victim._mpnb_key
    sample_until(sampler, key_victim, {"sleeping", "running"})
    victim.kill()
    assert sample_until(sampler, key_victim, {"killed"}).exit_status == "-9 SIGKILL"
    assert sample_until(sampler, key_ok, {"finished"}).pid == ok.pid

    with ctx.Pool(2) as pool:
        result = pool.map_async(time.sleep, [0.3] * 6, chunksize=1)
        busy = wait_for(
            lambda: [
                p for p in sampler.sample().processes if p.task and p.task.startswith("sleep(")
            ]
        )
        name = busy[0].pool
        result.get(60)
        (progress,) = wait_for(
            lambda: [p for p in sampler.sample().pools if p.name == name and p.done == 6]
        )
        assert (progress.submitted, progress.failed) == (6, 0)
    assert {p.pool for p in busy} == {name}
    assert not REGISTRY.live_handles().keys() & {key_ok, key_victim}


# -- history and pools ------------------------------------------------------------------
def finish_fake(registry: Registry, name: str, code: int, pool: str | None = None) -> int:
    key = registry.add_process(name, "spawn", pool=pool)
    registry.update_process(key, pid=100000 + key, exitcode=code)
    return key


def test_history_is_bounded_and_newest_first(registry: Registry) -> None:
    keys = [finish_fake(registry, f"old-{i}", 0) for i in range(6)]
    sampler = Sampler(history=3, registry=registry)
    assert [p.key for p in sampler.sample().processes] == keys[::-1][:3]
    assert Sampler(history=0, registry=registry).sample().processes == ()


def test_history_grows_the_registry(registry: Registry) -> None:
    registry.set_history(2)
    Sampler(history=10, registry=registry)
    assert registry.history == 10
    Sampler(history=1, registry=registry)
    assert registry.history == 10


def test_pool_progress_tasks_and_grouping(registry: Registry) -> None:
    registry.add_pool("Pool-7", 2, "forkserver")
    worker = registry.add_process("PoolWorker-1", "forkserver", pool="Pool-7")
    registry.update_process(worker, pid=os.getpid(), task="square(3)")
    loner = finish_fake(registry, "loner", 0)
    registry.count_pool("Pool-7", submitted=10, done=2)
    sampler = Sampler(registry=registry)
    first = sampler.sample()
    assert first.pools[0].rate == 0.0
    time.sleep(0.05)
    registry.count_pool("Pool-7", done=3, failed=1)
    snapshot = sampler.sample()
    (pool,) = snapshot.pools
    assert (pool.submitted, pool.done, pool.failed) == (10, 5, 1)
    assert pool.rate > 0
    assert [p.task for p in snapshot.pool_workers("Pool-7")] == ["square(3)"]
    assert [p.key for p in snapshot.standalone] == [loner]
    text = render_text(snapshot)
    assert "Pool-7 (forkserver, 2 processes): 5/10 done, 1 failed" in text
    assert "square(3)" in text


def test_bad_arguments(registry: Registry) -> None:
    with pytest.raises(ValueError, match="interval"):
        Sampler(0, registry=registry)
    with pytest.raises(ValueError, match="history"):
        Sampler(history=-1, registry=registry)


# -- the thread -------------------------------------------------------------------------
def test_thread_samples_and_stops(registry: Registry) -> None:
    sampler = Sampler(0.01, registry=registry)
    seen: list[Snapshot] = []
    stopped: list[bool] = []
    sampler.subscribe(seen.append)
    sampler.on_stop(lambda: stopped.append(True))
    sampler.start()
    assert sampler in running_samplers()
    wait_for(lambda: len(seen) >= 3)
    assert seen[-1].system.cpu_percent and len(seen[-1].system.cpu_percent) == psutil.cpu_count()
    sampler.stop()
    sampler.stop()
    assert not sampler.running and stopped == [True]
    assert sampler not in running_samplers()
    assert sampler.cost >= 0


def test_stop_all(registry: Registry) -> None:
    samplers = [Sampler(0.01, registry=registry).start() for _ in range(3)]
    stop_all()
    assert not any(s.running for s in samplers) and not running_samplers()


def test_a_failing_listener_does_not_stop_sampling(registry: Registry, caplog) -> None:
    sampler = Sampler(0.01, registry=registry)
    calls: list[int] = []

    def listener(snapshot: Snapshot) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    sampler.subscribe(listener)
    sampler.start()
    wait_for(lambda: len(calls) >= 3)
    sampler.stop()
    assert "a listener failed" in caplog.text


# -- renderings -------------------------------------------------------------------------
def test_renderings_show_pids_states_exit_codes_and_cores(registry: Registry) -> None:
    ok = finish_fake(registry, "ok", 0)
    bad = finish_fake(registry, "bad", 1)
    killed = finish_fake(registry, "victim", -9)
    registry.update_process(registry.add_process("busy", "spawn"), pid=os.getpid())
    snapshot = Sampler(registry=registry).sample()
    text = render_text(snapshot)
    page = render_html(snapshot)
    for key, state, code in (
        (ok, "finished", "0"),
        (bad, "failed", "1"),
        (killed, "killed", "-9 SIGKILL"),
    ):
        assert f'data-pid="{100000 + key}" data-state="{state}"' in page
        line = next(ln for ln in text.splitlines() if str(100000 + key) in ln)
        assert state in line and code in line
    assert page.count('class="mpnb-core"') == psutil.cpu_count()
    assert "<script" not in page


def test_empty_renderings(registry: Registry) -> None:
    snapshot = Sampler(registry=registry).sample()
    assert "no process started through mpnb yet" in render_text(snapshot)
    assert "no process started through mpnb yet" in render_html(snapshot)


# -- the dashboard ----------------------------------------------------------------------
def test_dashboard_widget_updates_and_closing_it_stops_the_sampler(registry: Registry) -> None:
    pytest.importorskip("ipywidgets")
    dashboard = Dashboard(Sampler(0.01, registry=registry))
    box = dashboard.widget
    dashboard.sampler.start()
    registry.update_process(registry.add_process("late", "spawn"), pid=os.getpid())
    processes = dashboard._parts["processes"]
    wait_for(lambda: f'data-pid="{os.getpid()}"' in processes.value)
    assert dashboard._parts["cores"].value.count('class="mpnb-core"') == psutil.cpu_count()
    box.close()
    assert dashboard.closed and not dashboard.sampler.running
    assert "stopped" in repr(dashboard)


def test_dashboard_stop_button(registry: Registry) -> None:
    pytest.importorskip("ipywidgets")
    dashboard = Dashboard(Sampler(0.01, registry=registry))
    dashboard.widget
    dashboard.sampler.start()
    dashboard._parts["stop"].click()
    assert dashboard.closed and not dashboard.sampler.running


def test_dashboard_pool_bars(registry: Registry) -> None:
    pytest.importorskip("ipywidgets")
    registry.add_pool("Pool-1", 2, "spawn")
    registry.count_pool("Pool-1", submitted=4, done=3, failed=1)
    dashboard = Dashboard(Sampler(registry=registry))
    (row_,) = dashboard.widget.children[3].children
    bar, label = row_.children
    assert (bar.value, bar.max, bar.bar_style) == (4, 4, "danger")
    assert "3/4 done, 1 failed" in label.value
    dashboard.close()


def test_monitor_replaces_the_previous_dashboard() -> None:
    from mpnb.dashboard.widget import monitor

    first = monitor(interval=0.05)
    second = monitor(interval=0.05)
    assert first.closed and not second.closed
    second.close()
    assert not running_samplers()


def test_text_outside_a_kernel(registry: Registry) -> None:
    dashboard = Dashboard(Sampler(registry=registry))
    assert repr(dashboard).startswith("mpnb monitor")
    assert dashboard._repr_html_().startswith('<div class="mpnb-dashboard"')


def test_psutil_and_ipywidgets_stay_out_of_the_core() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mpnb, mpnb.registry, mpnb.process, mpnb.pool; "
        "print(sorted(m for m in ('psutil', 'ipywidgets') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_missing_ipywidgets_says_what_to_install(registry: Registry, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    dashboard = Dashboard(Sampler(registry=registry))
    with pytest.raises(ImportError, match="pip install 'ipywidgets>=8'"):
        dashboard.widget
    dashboard.close()


# -- %mp_monitor ------------------------------------------------------------------------
@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    from mpnb.magics.dashboard import MonitorMagics

    ip = InteractiveShell.instance()
    ip.register_magics(MonitorMagics)
    return ip


@pytest.mark.parametrize(
    "line, message",
    [
        ("--interval 0", "--interval must be a positive"),
        ("--history -1", "--history must be 0 or more"),
        ("--stop --interval 1", "takes no other option"),
        ("--bogus", "unrecognized arguments"),
        ("--interval soon", "invalid float value"),
    ],
)
def test_magic_bad_usage(shell: Any, line: str, message: str) -> None:
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("mp_monitor", line)


def test_magic_in_the_terminal_prints_a_table(shell: Any, capsys) -> None:
    shell.run_line_magic("mp_monitor", "--interval 0.05 --history 5")
    assert capsys.readouterr().out.startswith("mpnb monitor")
    assert not running_samplers()


def test_magic_stop(shell: Any) -> None:
    sampler = Sampler(0.01, registry=Registry()).start()
    shell.run_line_magic("mp_monitor", "--stop")
    assert not sampler.running


def test_magic_help(shell: Any) -> None:
    doc = shell.find_line_magic("mp_monitor").__doc__
    for option in ("--interval", "--history", "--stop"):
        assert option in doc


def test_module_constants() -> None:
    assert set(monitor_module.STATES) >= {
        "starting",
        "running",
        "sleeping",
        "finished",
        "failed",
        "killed",
    }


def test_mpnb_monitor_stays_callable() -> None:
    import mpnb
    import mpnb.dashboard.sampler
    import mpnb.dashboard.widget

    assert callable(mpnb.monitor)
    mpnb.monitor(interval=0.05).close()


def test_unload_ext_stops_every_dashboard(shell: Any) -> None:
    from mpnb.dashboard.widget import monitor

    shell.run_line_magic("load_ext", "mpnb")
    dashboard = monitor(interval=0.05)
    sampler = Sampler(0.05, registry=Registry()).start()
    shell.run_line_magic("unload_ext", "mpnb")
    assert dashboard.closed and not sampler.running


# -- in a real kernel -------------------------------------------------------------------
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.mark.timeout(300)
def test_in_a_kernel_updates_while_a_cell_runs_and_stop_freezes(kernel: Any) -> None:
    shown = kernel.ensure_ok("%load_ext mpnb\n%mp_monitor --interval 0.1").displays
    widget, snapshot = [d for d in shown if d["msg_type"] == "display_data"]
    assert WIDGET_VIEW in widget["data"] and WIDGET_VIEW not in snapshot["data"]
    assert 'class="mpnb-snapshot"' in snapshot["data"]["text/html"]
    widget_id = widget["transient"]["display_id"]
    snapshot_id = snapshot["transient"]["display_id"]

    busy = kernel.ensure_ok(
        "import time, mpnb\nwith mpnb.Pool(2) as pool:\n    pool.map(time.sleep, [0.5] * 4)"
    )
    updates = [
        m for m in busy.messages if m["msg_type"] == "comm_msg" and "state" in m["content"]["data"]
    ]
    assert len(updates) >= 4, "the widget did not update while the cell ran"
    (refreshed,) = [d for d in busy.displays if d["msg_type"] == "update_display_data"]
    assert refreshed["transient"]["display_id"] == snapshot_id
    # What a saved notebook keeps says it is a snapshot, and of when.
    assert re.search(
        r"mpnb monitor \(snapshot taken \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)",
        refreshed["data"]["text/html"],
    )
    assert "live" not in refreshed["data"]["text/plain"].splitlines()[0]

    stopped = kernel.ensure_ok("%mp_monitor --stop").displays
    frozen = {
        d["transient"]["display_id"]: d["data"]
        for d in stopped
        if d["msg_type"] == "update_display_data"
    }
    assert WIDGET_VIEW not in frozen[widget_id]
    assert "mpnb monitor (stopped" in frozen[widget_id]["text/html"]
    assert frozen[snapshot_id] == {"text/plain": ""}
    assert (
        kernel.evaluate(
            "len(__import__('mpnb.dashboard.sampler', fromlist=['_']).running_samplers())"
        )
        == 0
    )
    after = kernel.ensure_ok("1 + 1")
    assert not after.displays, "a stopped dashboard still refreshes its snapshot"


@pytest.mark.kernel
@pytest.mark.timeout(300)
def test_idle_dashboard_sends_nothing_and_an_undisplayed_one_samples_nothing(kernel: Any) -> None:
    threads = (
        "sorted(t.name for t in __import__('threading').enumerate() if t.name == 'mpnb-monitor')"
    )
    kernel.ensure_ok("import mpnb\nm = mpnb.monitor(interval=0.1)")
    assert kernel.evaluate(threads) == []
    assert kernel.evaluate("m.sampler.running") is False

    shown = kernel.ensure_ok("m")
    assert any(WIDGET_VIEW in d["data"] for d in shown.displays if "data" in d)
    assert kernel.evaluate(threads) == ["mpnb-monitor"]
    # Nothing of mpnb's runs: over 3 s (30 samples), the widget is sent nothing.
    idle = kernel.ensure_ok("import time\ntime.sleep(3)")
    comms = [m for m in idle.messages if m["msg_type"] == "comm_msg"]
    assert comms == [], comms[:3]
    kernel.ensure_ok("m.close()")
    assert kernel.evaluate(threads) == []


def test_dashboard_shows_the_last_runs_timeline(registry: Registry) -> None:
    pytest.importorskip("ipywidgets")
    import mpnb

    dashboard = Dashboard(Sampler(registry=registry))
    dashboard.widget
    with mpnb.Pool(2) as pool:
        pool.map(abs, range(-8, 0), chunksize=1)
    dashboard.sampler.sample()
    value = dashboard._parts["timeline"].value
    assert value.count('<g class="mpnb-lane"') == len({t.lane for t in pool.timeline().tasks})
    assert value.count('class="mpnb-task') == 8
    sent = value
    dashboard.sampler.sample()  # nothing new: the same value, nothing sent
    assert dashboard._parts["timeline"].value is sent
    dashboard.close()

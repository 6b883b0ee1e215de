"""The dashboard as a user sees it: JupyterLab in headless Chromium, cells run through the UI.

A notebook starts a process that exits 0, one that raises, one killed with SIGKILL and
a pool at work; the rendered dashboard must show their pids, states, exit codes, the
pool's progress and one CPU bar per core, and keep the last snapshot once stopped, also
in the saved file. A screenshot is kept in tests/artifacts/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psutil
import pytest
from browser_harness import (
    JupyterLab,
    chromium_page,
    missing,
    serving,
    wait_until,
    write_notebook,
)
from browser_harness import run_cell as harness_run_cell

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

ARTIFACTS = Path(__file__).parent / "artifacts"
TASKS = 24

CELLS = [
    # 0: cell-defined targets
    """\
import os, signal, time
import mpnb as mp

def ok_job():
    time.sleep(0.3)

def bad_job():
    raise ValueError("this process fails on purpose")

def slow_square(x):
    time.sleep(0.25)
    return x * x
""",
    # 1: the dashboard
    "dash = mp.monitor(interval=0.25)\ndash",
    # 2: one exits 0, one raises, one is killed
    """\
ok = mp.Process(target=ok_job, name="ok-job")
bad = mp.Process(target=bad_job, name="bad-job")
victim = mp.Process(target=time.sleep, args=(600,), name="victim")
for p in (ok, bad, victim):
    p.start()
time.sleep(1.0)
os.kill(victim.pid, signal.SIGKILL)
for p in (ok, bad, victim):
    p.join(60)
print("PIDS", ok.pid, bad.pid, victim.pid, "CODES", ok.exitcode, bad.exitcode, victim.exitcode)
""",
    # 3: a pool at work, in the background
    f"""\
pool = mp.Pool(2)
result = pool.map_async(slow_square, range({TASKS}), chunksize=1)
print("WORKERS", *sorted(w.pid for w in pool._pool))
""",
    # 4: the pool's work done
    "print('SQUARES', sum(result.get(timeout=300)))\npool.close()\npool.join()",
    # 5: stop: every display keeps its last snapshot
    "dash.close()",
]


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory):
    reason = missing()
    if reason:
        pytest.skip(f"browser test needs Chromium, Playwright and JupyterLab: {reason}")
    root = tmp_path_factory.mktemp("lab-root")
    write_notebook(root / "dashboard.ipynb", CELLS)
    with serving(JupyterLab, root, tmp_path_factory.mktemp("lab-home")) as server:
        yield server


@pytest.fixture
def page(lab: JupyterLab):
    with chromium_page() as page:
        yield page


def run_cell(page: Any, lab: JupyterLab, index: int, timeout: float = 300.0) -> str:
    """Run cell ``index``; its output text."""
    return str(harness_run_cell(page, lab, index, timeout).inner_text())


def process_row(dashboard: Any, pid: int, states: tuple[str, ...]) -> str | None:
    for state in states:
        row = dashboard.locator(f'tr.mpnb-process[data-pid="{pid}"][data-state="{state}"]')
        if row.count():
            return row.first.inner_text()
    return None


def test_dashboard_in_jupyterlab(lab: JupyterLab, page: Any) -> None:
    page.goto(lab.notebook_url("dashboard.ipynb"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\bIdle\b")).wait_for()

    run_cell(page, lab, 0)
    run_cell(page, lab, 1)
    output = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea")
    dashboard = output.locator(".mpnb-widget")
    dashboard.wait_for()
    snapshot = output.locator(".mpnb-snapshot")
    assert snapshot.count() == 1 and not snapshot.is_visible()
    assert dashboard.locator(".mpnb-core").count() == psutil.cpu_count()
    assert dashboard.locator("button", has_text="Stop").count() == 1

    printed = run_cell(page, lab, 2)
    found = re.search(r"PIDS (\d+) (\d+) (\d+) CODES (\S+) (\S+) (\S+)", printed)
    assert found, printed
    ok, bad, victim = map(int, found.groups()[:3])
    assert found.groups()[3:] == ("0", "1", "-9")
    for pid, state, code in (
        (ok, "finished", "0"),
        (bad, "failed", "1"),
        (victim, "killed", "-9 SIGKILL"),
    ):
        row = wait_until(
            lambda pid=pid, state=state: process_row(dashboard, pid, (state,)), f"{pid} {state}"
        )
        cells = row.split("\t")
        assert str(pid) in cells and state in cells and code in cells, row

    printed = run_cell(page, lab, 3)
    workers = [int(pid) for pid in re.search(r"WORKERS ([\d ]+)", printed).group(1).split()]
    assert len(workers) == 2
    for pid in workers:
        wait_until(
            lambda pid=pid: process_row(dashboard, pid, ("running", "sleeping")), f"worker {pid}"
        )
    wait_until(lambda: "slow_square" in dashboard.inner_text(), "a worker's task")
    wait_until(
        lambda: re.search(rf"[1-9]\d*/{TASKS} done", dashboard.inner_text()), "pool progress"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    dashboard.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    page.screenshot(path=str(ARTIFACTS / "dashboard-page.png"))

    printed = run_cell(page, lab, 4)
    assert f"SQUARES {sum(x * x for x in range(TASKS))}" in printed
    wait_until(
        lambda: f"{TASKS}/{TASKS} done, 0 failed" in dashboard.inner_text(), "the pool's work done"
    )
    for pid in workers:
        wait_until(
            lambda pid=pid: process_row(dashboard, pid, ("finished", "killed")), f"{pid} ended"
        )
    assert not snapshot.is_visible()

    # Saved while live: the widget, and under it a recent snapshot for viewers without it.
    page.keyboard.press("Control+s")
    saved = wait_until(lambda: _saved_outputs(lab, live=True), "the saved live dashboard")
    assert "-9 SIGKILL" in saved and str(victim) in saved

    run_cell(page, lab, 5)
    wait_until(lambda: "mpnb monitor (stopped" in output.inner_text(), "its stopped snapshot")
    assert output.locator(".jupyter-widgets").count() == 0
    frozen = output.inner_text()
    for pid in (ok, bad, victim, *workers):
        assert str(pid) in frozen
    assert "-9 SIGKILL" in frozen
    assert output.locator(".mpnb-core").count() == psutil.cpu_count()
    output.screenshot(path=str(ARTIFACTS / "dashboard-stopped.png"))

    page.keyboard.press("Control+s")
    saved = wait_until(lambda: _saved_outputs(lab, live=False), "the saved stopped snapshot")
    assert "-9 SIGKILL" in saved and str(victim) in saved and f"{TASKS}/{TASKS} done" in saved


def _saved_outputs(lab: JupyterLab, live: bool) -> str | None:
    """The dashboard cell's saved HTML, once the file holds a live widget and its
    snapshot (``live``) or the stopped snapshot in place of the widget."""
    try:
        notebook = json.loads((lab.root / "dashboard.ipynb").read_text())
    except json.JSONDecodeError:
        return None  # JupyterLab is writing the file: read it again

    datas = [output.get("data", {}) for output in notebook["cells"][1].get("outputs", [])]
    widgets = [d for d in datas if "application/vnd.jupyter.widget-view+json" in d]
    pages = ["".join(d.get("text/html", "")) for d in datas]
    wanted = "mpnb monitor (snapshot taken" if live else "mpnb monitor (stopped"
    found = [p for p in pages if wanted in p]
    if found and bool(widgets) == live:
        return found[0]
    return None

"""The timeline as a user sees it: ``%mp_timeline`` and the dashboard's timeline in
JupyterLab and in Notebook 7 (headless Chromium, cells run through the UI).

A pool of 2 runs 8 items, one of which raises and one of which kills its worker: the
timeline must show a lane per worker (the two, and the one that replaced the dead),
a bar per task, one red and one crashed. Screenshots are kept in tests/artifacts/.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    JupyterLab,
    Notebook7,
    chromium_page,
    missing,
    run_cell,
    serving,
    wait_until,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

ARTIFACTS = Path(__file__).parent / "artifacts"

CELLS = [
    """\
%load_ext mpnb
import os, time
import mpnb as mp

def work(x):
    if x == 3:
        raise ValueError("three")
    if x == 5:
        os._exit(9)
    time.sleep(0.2)
    return x

dash = mp.monitor(interval=0.25)
dash""",
    """\
got = []
with mp.Pool(2) as pool:
    it = pool.imap(work, range(8))
    for _ in range(8):
        try:
            got.append(next(it))
        except Exception as exc:
            got.append(type(exc).__name__)
print("GOT", got)""",
    "%mp_timeline",
]


@pytest.fixture(params=["jupyterlab", "notebook7"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    reason = missing("notebook" if request.param == "notebook7" else "jupyterlab")
    if reason:
        pytest.skip(f"browser test needs Chromium, Playwright and {request.param}: {reason}")
    root = tmp_path_factory.mktemp("timeline-root")
    write_notebook(root / "timeline.ipynb", CELLS)
    kind = Notebook7 if request.param == "notebook7" else JupyterLab
    with serving(kind, root, tmp_path_factory.mktemp("timeline-home")) as app:
        app.kind = request.param  # type: ignore[attr-defined]
        yield app


@pytest.fixture
def page(server: JupyterLab):
    with chromium_page() as page:
        yield page


def test_timeline_renders_a_lane_per_worker(server: JupyterLab, page: Any) -> None:
    kind = server.kind  # type: ignore[attr-defined]
    page.goto(server.notebook_url("timeline.ipynb"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    wait_until(
        lambda: page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").count() == 3,
        "the cells",
    )
    time.sleep(2)  # the kernel starting

    dashboard = run_cell(page, server, 0).locator(".mpnb-widget")
    dashboard.wait_for()
    printed = run_cell(page, server, 1).inner_text()
    assert "GOT [0, 1, 2, 'ValueError', 4, 'WorkerCrashedError', 6, 7]" in printed, printed

    output = run_cell(page, server, 2)
    svg = output.locator("svg.mpnb-timeline-svg")
    svg.wait_for()
    assert svg.locator("g.mpnb-lane").count() == 3
    assert svg.locator("rect.mpnb-task").count() == 8
    assert svg.locator("rect.mpnb-error").count() == 1
    assert svg.locator("rect.mpnb-crashed").count() == 1
    assert "8 tasks (8 items) on 3 lanes" in output.inner_text()
    box = svg.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 50
    ARTIFACTS.mkdir(exist_ok=True)
    output.screenshot(path=str(ARTIFACTS / f"timeline-{kind}.png"))

    # The dashboard shows the same run under its table.
    lanes = dashboard.locator(".mpnb-dashboard-timeline g.mpnb-lane")
    wait_until(lambda: lanes.count() == 3, "the dashboard's timeline")
    dashboard.screenshot(path=str(ARTIFACTS / f"timeline-dashboard-{kind}.png"))
    run_cell(page, server, 2)  # leaves the kernel idle before the server stops

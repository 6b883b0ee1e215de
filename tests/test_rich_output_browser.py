"""Rich output from workers as a user sees it, in JupyterLab and in Notebook 7.

A notebook run through the UI in headless Chromium: a matplotlib figure drawn in a pool
worker renders as an image in its cell, and a DataFrame a worker displays renders as a
table. Screenshots are kept in tests/artifacts/.
"""

from __future__ import annotations

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
import mpnb as mp

def draw(k):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, k + 1, 0])
    ax.set_title(f"figure {k} from a worker")
    plt.show()
    return k

def frame(k):
    import pandas as pd
    display(pd.DataFrame({"worker_item": [k], "square": [k * k]}))
    return k
""",
    "with mp.Pool(2) as pool:\n    pool.map(draw, range(2))",
    "with mp.Pool(2) as pool:\n    pool.map(frame, [7])",
]

SERVERS = {"jupyterlab": JupyterLab, "notebook": Notebook7}


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    reason = missing(request.param)
    if reason:
        pytest.skip(f"browser test needs Chromium, Playwright and {request.param}: {reason}")
    root = tmp_path_factory.mktemp("rich-root")
    write_notebook(root / "rich.ipynb", CELLS)
    with serving(SERVERS[request.param], root, tmp_path_factory.mktemp("rich-home")) as running:
        yield running


@pytest.fixture
def page(server: JupyterLab):
    with chromium_page(1200, 1000) as page:
        yield page


def kernel_idle(server: JupyterLab) -> bool:
    kernels = server.api("GET", "/api/kernels")
    return bool(kernels) and all(k.get("execution_state") == "idle" for k in kernels)


def test_worker_figures_and_frames_render(server: JupyterLab, page: Any) -> None:
    try:
        _figures_and_frames(server, page)
    except Exception as exc:  # keep what the page showed, and the server's log
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"rich-output-{server.module}-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(
            f"{exc}\n(screenshot: {shot})\n--- server log ---\n{server.log()}"
        ) from exc


def _figures_and_frames(server: JupyterLab, page: Any) -> None:
    page.goto(server.notebook_url("rich.ipynb"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    wait_until(lambda: kernel_idle(server), "the kernel ready")

    run_cell(page, server, 0)
    figures = run_cell(page, server, 1)
    images = figures.locator("img")
    wait_until(lambda: images.count() == 2, "two figures")
    for i in range(2):
        image = images.nth(i)
        assert (image.get_attribute("src") or "").startswith("data:image/png;base64,")
        wait_until(
            lambda image=image: image.evaluate("img => img.complete && img.naturalWidth > 0"),
            "a decoded image",
        )
    assert "Traceback" not in figures.inner_text()

    frames = run_cell(page, server, 2)
    table = frames.locator("table.dataframe")
    table.wait_for()
    text = table.inner_text()
    assert "worker_item" in text and "square" in text and "49" in text

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"rich-output-{server.module}.png"), full_page=True)
    figures.screenshot(path=str(ARTIFACTS / f"rich-output-{server.module}-figures.png"))
    frames.screenshot(path=str(ARTIFACTS / f"rich-output-{server.module}-frame.png"))

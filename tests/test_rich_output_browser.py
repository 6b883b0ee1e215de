"""Rich output from workers as a user sees it, in JupyterLab and in Notebook 7.

A notebook run through the UI in headless Chromium: a matplotlib figure drawn in a pool
worker renders as an image in its cell, and a DataFrame a worker displays renders as a
table. Screenshots are kept in tests/artifacts/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser_harness import JupyterLab, Notebook7, launch_chromium, missing

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
    import nbformat

    root = tmp_path_factory.mktemp("rich-root")
    notebook = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        }
    )
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nbformat.write(notebook, root / "rich.ipynb")
    running = SERVERS[request.param](root, tmp_path_factory.mktemp("rich-home")).start()
    try:
        yield running
    finally:
        leftovers = running.stop()
        assert not leftovers, f"processes left after shutdown (killed): {leftovers}"


@pytest.fixture
def page(server: JupyterLab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.set_default_timeout(120_000)
            yield page
        finally:
            browser.close()


def wait_until(check: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.2)


def kernel_idle(server: JupyterLab) -> bool:
    kernels = server.api("GET", "/api/kernels")
    return bool(kernels) and all(k.get("execution_state") == "idle" for k in kernels)


def run_cell(page: Any, server: JupyterLab, index: int, timeout: float = 300.0) -> Any:
    """Run cell ``index`` with Shift+Enter; wait until it ran; return its output area."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    prompt = cell.locator(".jp-InputPrompt")

    def finished() -> bool:
        server.watch()  # remember the processes started, for the leak check at the end
        return bool(re.fullmatch(r"\[\d+\]:", prompt.inner_text().strip()))

    wait_until(finished, f"cell {index} finished", timeout)
    return cell.locator(".jp-OutputArea")


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

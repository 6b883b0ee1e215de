"""What a saved notebook and its static export say: the final state, not a stale widget.

A notebook with a progress map and a dashboard is executed by nbclient (as
``jupyter nbconvert --execute`` does), saved, and exported to HTML by nbconvert, both
with the widget state nbclient stores and without it (what a notebook saved from the
UI keeps). Each export must show the finished bar's final text, the dashboard's
snapshot labelled as one, and the pool's final counts.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]

CELLS = [
    "%load_ext mpnb\nimport mpnb as mp\nmonitor = mp.monitor(interval=0.1)\nmonitor",
    "import time\n\ndef square(x):\n    time.sleep(0.02)\n    return x * x\n\npool = mp.Pool(2)",
    "results = pool.map(square, range(8))\nfrom mpnb.registry import REGISTRY\n"
    "[(p.done, p.submitted) for p in REGISTRY.snapshot()[1] if p.name == pool._name]",
    "squares = pool.map(square, range(16), progress=True)\nsum(squares)",
    "%mp_timeline",
    "pool.apply(square, (5,))",  # a run of one task, whose count is final as the cell ends
]


def _runner():
    name = "run_notebooks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "notebooks" / "run_notebooks.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Path:
    from nbclient import NotebookClient

    folder = tmp_path_factory.mktemp("saved")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = NotebookClient(
        nb,
        km=_runner()._kernel_manager(),
        timeout=60,
        allow_errors=False,
        resources={"metadata": {"path": str(folder)}},
    )
    try:
        client.execute()
    finally:
        if client.km is not None and client.km.has_kernel:
            client.km.shutdown_kernel(now=False)  # its pool and monitor go with it
    path = folder / "executed.ipynb"
    nbformat.write(nb, path)
    return path


def _html(nb) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def _outputs(nb, index: int) -> list[dict]:
    return nb.cells[index]["outputs"]


def _text(output: dict) -> str:
    data = output.get("data", {})
    return data.get("text/html", "") + data.get("text/plain", "")


@pytest.mark.parametrize("widget_state", [True, False], ids=["executed", "saved-from-ui"])
def test_export_shows_the_final_state(executed: Path, widget_state: bool) -> None:
    nb = nbformat.read(executed, as_version=4)
    if not widget_state:
        nb = copy.deepcopy(nb)
        nb.metadata.pop("widgets", None)
    page = _html(nb)
    # The progress bar: its final text, in the HTML export, as plain text too.
    assert re.search(r"16/16 done in \d+\.\d s", page), "no final state in the export"
    (bar,) = _outputs(nb, 3)[:1]
    assert "application/vnd.jupyter.widget-view+json" not in bar["data"]
    assert re.fullmatch(r"mpnb\.Pool: 16/16 done in \d+\.\d s", bar["data"]["text/plain"])
    assert "value=0" not in page
    # The dashboard's snapshot: labelled as one, with its time, and the final counts.
    assert re.search(r"mpnb monitor \(snapshot taken \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)", page)
    snapshot = next(o for o in _outputs(nb, 0) if "mpnb-snapshot" in _text(o))
    assert "Pool-" in _text(snapshot) and "25/25 done" in _text(snapshot)
    # The timeline of the last run, inline, a lane per worker.
    (timeline,) = _outputs(nb, 4)
    assert timeline["data"]["text/html"].count('<g class="mpnb-lane"') == 2
    assert "8 tasks (16 items) on 2 lanes" in timeline["data"]["text/plain"]


def test_counts_are_final_when_each_cell_ends(executed: Path) -> None:
    """What the monitor reads is final as soon as a map returns, and so is the widget."""
    nb = nbformat.read(executed, as_version=4)
    (counts,) = _outputs(nb, 2)
    assert counts["data"]["text/plain"] == "[(8, 8)]"
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    labels = [
        m["state"].get("value", "")
        for m in state.values()
        if m.get("model_name") == "HTMLModel"
        and str(m["state"].get("value", "")).startswith("Pool-")
    ]
    assert labels and all("25/25 done" in label for label in labels), labels

"""The notebooks in notebooks/: each runs top to bottom on a real kernel, and is saved clean.

Each notebook runs with ``notebooks/run_notebooks.py`` (nbclient, an ipykernel on this
interpreter, from a clean state) within its own time limit. A cell may fail only if it is
tagged ``raises-exception``, and a cell so tagged must fail: the tag documents an error
the notebook means to show. No process may outlive the kernel.

The saved files must carry no error outputs: the gallery is committed without outputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

# Seconds a whole notebook may take, kernel start and shutdown included (each takes
# well under 15 s on 2 cores), and one cell.
NOTEBOOK_TIMEOUT = 120
CELL_TIMEOUT = 60

RAISES = "raises-exception"


def _runner():
    """notebooks/run_notebooks.py as a module."""
    name = "run_notebooks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, NOTEBOOK_DIR / "run_notebooks.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _params(marks=()):
    return [pytest.param(path, id=path.name, marks=marks) for path in NOTEBOOKS]


def _tagged(cell) -> bool:
    return RAISES in cell.get("metadata", {}).get("tags", [])


def test_gallery_is_there():
    names = [p.name for p in NOTEBOOKS]
    assert "quickstart.ipynb" in names
    numbered = [n for n in names if n[:2].isdigit()]
    assert len(numbered) >= 4, f"the numbered gallery notebooks are missing: {names}"


@pytest.mark.parametrize("path", _params())
def test_saved_without_error_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    errors = [
        f"cell {i + 1}: {out.get('ename')}: {out.get('evalue')}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, (
        f"{path.name} was saved with error outputs; clear the outputs before saving "
        f"(Edit > Clear Outputs of All Cells):\n" + "\n".join(errors)
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", _params(marks=pytest.mark.timeout(NOTEBOOK_TIMEOUT)))
def test_notebook_runs_clean(path: Path):
    report = _runner().run_notebook(path, timeout=CELL_TIMEOUT, echo=True)
    assert report.ok, f"{path.name}: {report.failure or 'processes outlived the kernel'}" + "".join(
        f"\n  left behind: {line}" for line in report.leftovers
    )

    nb = nbformat.read(path, as_version=4)
    by_index = {c.index: c for c in report.cells}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        status = by_index[i + 1].status
        if _tagged(cell):
            assert status == "expected-error", (
                f"{path.name}, cell {i + 1} is tagged {RAISES} but did not raise "
                f"(status {status}):\n{cell.source}"
            )
        else:
            assert status == "ok", f"{path.name}, cell {i + 1}: {status}\n{cell.source}"

"""Outside a kernel, a child's rich output falls back to its text on the terminal.

A plain script and terminal IPython run ``display(...)`` and ``plt.show()`` in mpnb
children: what a notebook would show as HTML, a table or an image is printed as text
where the child's stdout goes, and nothing fails.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kernel_harness import run_terminal_ipython

pytestmark = pytest.mark.timeout(240)

CHILD_CODE = """
import mpnb as mp

def show(tag):
    from IPython.display import HTML, Markdown, display
    import pandas as pd
    display(pd.DataFrame({"col": [f"frame {tag}"]}))
    display(HTML(f"<b>html {tag}</b>"))
    handle = display(Markdown("*start*"), display_id=True)
    if handle is not None:
        handle.update(Markdown("*done*"))
    print("shown", tag)
    return tag

def plot(tag):
    import matplotlib.pyplot as plt
    plt.plot([1, 2, 3])
    plt.show()
    print("plotted", tag)
"""

PARENT_CODE = """
for method in ("forkserver", "spawn"):
    ctx = mp.get_context(method)
    with ctx.Pool(1) as pool:
        pool.map(show, [method])
    p = ctx.Process(target=plot, args=(method,))
    p.start(); p.join()
    print("exitcode", method, p.exitcode)
"""


def _check(stdout: str) -> None:
    for method in ("forkserver", "spawn"):
        assert f"frame {method}" in stdout  # the DataFrame's text table
        assert f"shown {method}" in stdout
        assert f"plotted {method}" in stdout
        assert f"exitcode {method} 0" in stdout
    assert "<table" not in stdout and "image/png" not in stdout
    assert "<IPython.core.display.HTML object>" in stdout


def test_a_script_prints_rich_output_as_text(tmp_path):
    script = tmp_path / "rich_script.py"
    script.write_text(
        CHILD_CODE
        + "\nif __name__ == '__main__':\n"
        + "".join("    " + line + "\n" for line in PARENT_CODE.strip().splitlines())
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    _check(proc.stdout)
    assert "Traceback" not in proc.stderr


def test_terminal_ipython_prints_rich_output_as_text(tmp_path):
    out = run_terminal_ipython(CHILD_CODE + PARENT_CODE + "\n", timeout=200, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    _check(out.stdout)
    assert "Traceback" not in out.stdout + out.stderr

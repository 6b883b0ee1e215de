"""mpnb works the same in a plain script and in terminal IPython."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from kernel_harness import run_terminal_ipython

pytestmark = [pytest.mark.core, pytest.mark.timeout(180)]

BODY = """
import mpnb as mp

class Point:
    def __init__(self, x):
        self.x = x

def square(x):
    return x * x

def main(method):
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        squares = pool.map(square, range(5))
        lam = pool.map(lambda v: v + 1, [1])
        pts = pool.map(Point, [3])
    q = ctx.Queue()
    p = ctx.Process(target=lambda q: q.put(Point(7)), args=(q,))
    p.start()
    got = q.get(timeout=60)
    p.join(60)
    print(method, squares, lam, isinstance(pts[0], Point), isinstance(got, Point), got.x,
          p.exitcode)
"""


def test_plain_script(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        BODY
        + textwrap.dedent("""
        if __name__ == "__main__":
            for method in mp.get_all_start_methods():
                main(method)
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=150, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    lines = sorted(out.stdout.split("\n"))[1:]
    for method, line in zip(sorted(["fork", "forkserver", "spawn"]), lines):
        assert line == f"{method} [0, 1, 4, 9, 16] [2] True True 7 0", out.stdout


def test_terminal_ipython():
    code = BODY + "\nfor method in mp.get_all_start_methods():\n    main(method)\n\nexit()\n"
    out = run_terminal_ipython(code, timeout=150)
    assert out.returncode == 0, out.stderr
    for method in ("fork", "forkserver", "spawn"):
        assert f"{method} [0, 1, 4, 9, 16] [2] True True 7 0" in out.stdout, out.stdout

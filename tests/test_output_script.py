"""Outside a kernel, children's output passes through: plain scripts, terminal IPython.

Children write to the file descriptors they inherit, as with the standard library:
nothing is tagged, framed or lost, and stderr stays stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(180)

CHILD_CODE = """
import logging, os, sys
import mpnb as mp

def work(tag):
    print("hello from", tag)
    print("to stderr", tag, file=sys.stderr)
    logging.warning("a warning from %s", tag)
    os.write(1, f"raw fd 1 {tag}\\n".encode())
    os.system(f"echo shell {tag}; echo shell error {tag} >&2")

def boom():
    raise ValueError("boom in child")
"""

PARENT_CODE = """
for method in METHODS:
    ctx = mp.get_context(method)
    p = ctx.Process(target=work, args=(method,))
    p.start(); p.join()
    q = ctx.Process(target=boom)
    q.start(); q.join()
    print("exitcodes", method, p.exitcode, q.exitcode)
print("routing", mp.output.activate(), mp.output.active())
"""


def _expected(methods: list[str]) -> tuple[list[str], list[str]]:
    out, err = [], []
    for m in methods:
        out += [f"hello from {m}", f"raw fd 1 {m}", f"shell {m}", f"exitcodes {m} 0 1"]
        err += [
            f"to stderr {m}",
            f"WARNING:root:a warning from {m}",
            f"shell error {m}",
            "ValueError: boom in child",
        ]
    return sorted(out + ["routing False False"]), sorted(err)


def _run(argv: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _check(proc: subprocess.CompletedProcess[str], methods: list[str]) -> None:
    out_expected, err_expected = _expected(methods)
    assert sorted(proc.stdout.splitlines()) == out_expected
    err = proc.stderr.splitlines()
    assert sorted(line for line in err if line in err_expected) == err_expected
    assert proc.stderr.count("Traceback (most recent call last)") == len(methods)
    for text in (proc.stdout, proc.stderr):
        assert "\0" not in text and "[stdout:" not in text and "[stderr:" not in text


def test_script_output_passes_through(tmp_path):
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    script = tmp_path / "script.py"
    script.write_text(
        CHILD_CODE
        + f"\nMETHODS = {methods!r}\n"
        + "if __name__ == '__main__':\n"
        + textwrap.indent(PARENT_CODE, "    ")
    )
    _check(_run([sys.executable, str(script)], str(tmp_path)), methods)


def test_terminal_ipython_output_passes_through(tmp_path):
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    code = "%load_ext mpnb\n" + CHILD_CODE + f"\nMETHODS = {methods!r}\n" + PARENT_CODE
    proc = _run(
        [sys.executable, "-m", "IPython", "--quick", "--no-banner", "--colors=NoColor", "-c", code],
        str(tmp_path),
    )
    _check(proc, methods)

"""binder/ builds an environment in which the whole notebook gallery runs.

Binder cannot be reached from a test, so this builds what repo2docker would from
binder/, in a fresh virtual environment instead of an image: install
``binder/requirements.txt`` with pip, then run ``./binder/postBuild`` from the
repository's root with the environment first on ``PATH``. In that environment it checks
that mpnb is installed from this repository, that JupyterLab has the widgets extension
(the live monitor and the progress bars need it), and then executes every notebook in
notebooks/ with ``notebooks/run_notebooks.py`` on the environment's own interpreter.

pip's cache is used as usual, so a second run downloads nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"

# Seconds for each step; the whole test has BUILD + GALLERY + a margin.
INSTALL_TIMEOUT = 600
GALLERY_TIMEOUT = 240
# What JupyterLab must list for widgets to work.
WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _env(venv: Path) -> dict[str, str]:
    """The environment a Binder build or session has: the venv first on PATH, nothing of
    the interpreter running the tests."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHONSTARTUP",
            "VIRTUAL_ENV",
            "PIP_REQUIRE_VIRTUALENV",
            "PIP_NO_CACHE_DIR",
        )
        and not k.startswith(("PYTEST_", "JUPYTER_"))
    }
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    return env


def _run(
    cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float, what: str
) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            timeout=timeout,
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
        pytest.fail(f"{what}: no end within {timeout:g} s\n{(out or '')[-4000:]}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (exit status {proc.returncode}):\n"
            f"$ {' '.join(cmd)}\n{proc.stdout[-6000:]}",
            pytrace=False,
        )
    return proc


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A virtual environment built from binder/ as repo2docker builds its image."""
    assert (BINDER / "requirements.txt").is_file(), "binder/requirements.txt is missing"
    post_build = BINDER / "postBuild"
    assert post_build.is_file(), "binder/postBuild is missing"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable (git mode 100755)"

    venv = tmp_path_factory.mktemp("binder") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _env(venv)
    python = str(venv / "bin" / "python")
    _run(
        [python, "-m", "pip", "install", "--progress-bar", "off", "-r", "binder/requirements.txt"],
        env=env,
        cwd=ROOT,
        timeout=INSTALL_TIMEOUT,
        what="pip install -r binder/requirements.txt",
    )
    _run(
        ["./binder/postBuild"], env=env, cwd=ROOT, timeout=INSTALL_TIMEOUT, what="binder/postBuild"
    )
    return venv, env


def test_mpnb_comes_from_this_repository(binder_env, tmp_path):
    venv, env = binder_env
    proc = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sys, mpnb; print(mpnb.__file__); print(sys.prefix)",
        ],
        env=env,
        cwd=tmp_path,
        timeout=60,
        what="import mpnb in the Binder environment",
    )
    module_file, prefix = proc.stdout.split()[-2:]
    assert Path(module_file).resolve() == (ROOT / "mpnb" / "__init__.py").resolve()
    assert Path(prefix).resolve() == venv.resolve()


def test_jupyterlab_has_the_widgets_extension(binder_env, tmp_path):
    venv, env = binder_env
    proc = _run(
        [str(venv / "bin" / "jupyter"), "labextension", "list"],
        env=env,
        cwd=tmp_path,
        timeout=120,
        what="jupyter labextension list",
    )
    lines = [ln for ln in proc.stdout.splitlines() if WIDGETS_EXTENSION in ln]
    assert lines, f"JupyterLab does not list {WIDGETS_EXTENSION}:\n{proc.stdout}"
    assert any("enabled" in ln and "OK" in ln for ln in lines), "\n".join(lines)


def test_gallery_runs_in_the_binder_environment(binder_env):
    venv, env = binder_env
    proc = _run(
        [str(venv / "bin" / "python"), "notebooks/run_notebooks.py", "--all"],
        env=env,
        cwd=ROOT,
        timeout=GALLERY_TIMEOUT,
        what="the gallery in the Binder environment",
    )
    print(proc.stdout)
    assert "notebooks passed" in proc.stdout.splitlines()[-1], proc.stdout[-2000:]

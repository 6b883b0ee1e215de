"""JupyterLab or Notebook 7 on loopback and headless Chromium, for tests that look at what a
user sees.

``JupyterLab`` starts a JupyterLab server, ``Notebook7`` a Jupyter Notebook 7 server, with
the same shape: ``start()``/``stop()`` (or a ``with`` block), ``notebook_url(name)``,
``api()``, ``watch()``, ``log()``.

The browser is the system's Chromium (``/usr/bin/chromium``, Debian's package) driven
by Playwright's Python package; Playwright's own browser downloads are never used.
The server runs in a temporary Jupyter environment (config, runtime, settings,
workspaces, IPython profile), answers only on 127.0.0.1 with a random port and token,
and is shut down with every kernel and every process they started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "JupyterLab",
    "Notebook7",
    "missing",
    "launch_chromium",
    "write_notebook",
    "serving",
    "chromium_page",
    "run_cell",
    "wait_until",
]

CHROMIUM = "/usr/bin/chromium"
# No sandbox (containers, root), no GPU, and nothing that reaches the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# JupyterLab settings that keep news and update checks (network, pop-ups) away.
_LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def missing(app: str = "jupyterlab") -> str | None:
    """Why the browser tests cannot run here, or None (``app``: the server's package,
    ``jupyterlab`` or ``notebook``)."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    for module in ("playwright", app):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[browser]')"
    return None


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class JupyterLab:
    """A JupyterLab server serving ``root``; a context manager."""

    #: What the server is called in messages, the module it runs, and its own options.
    name = "JupyterLab"
    module = "jupyterlab"
    app_options = (
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    )
    #: The notebook page of a file, under the server's base URL.
    notebook_path = "/lab/tree/{name}"

    def __init__(self, root: Path, home: Path, python: str = sys.executable) -> None:
        self.root, self.home, self.python = Path(root), Path(home), python
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "jupyterlab.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._seen: dict[int, psutil.Process] = {}

    def notebook_url(self, name: str) -> str:
        return f"{self.base}{self.notebook_path.format(name=name)}?token={self.token}"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for var, sub in (
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("JUPYTERLAB_SETTINGS_DIR", "settings"),
            ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
            ("IPYTHONDIR", "ipython"),
        ):
            path = self.home / sub
            path.mkdir(parents=True, exist_ok=True)
            env[var] = str(path)
        for name, settings in _LAB_SETTINGS.items():
            target = self.home / "settings" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(settings))
        env.pop("JUPYTER_PATH", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, timeout: float = 120.0) -> JupyterLab:
        command = [
            self.python,
            "-m",
            self.module,
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.open_browser=False",
            *self.app_options,
            "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        env = self._environment()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                self.api("GET", "/api/status")
                return self
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} did not answer in {timeout}s:\n{self.log()}"
                    ) from exc
                time.sleep(0.25)

    def api(self, method: str, path: str, timeout: float = 10.0) -> Any:
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def watch(self) -> None:
        """Remember every process the server has started so far (kernels, their children)."""
        if self.process is None:
            return
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self._seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Shut the server and its kernels down; returns what had to be killed."""
        if self.process is None:
            return []
        self.watch()
        try:
            self.api("POST", "/api/shutdown")
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
        seen = list(self._seen.values())
        _, alive = psutil.wait_procs(seen, timeout=timeout)
        leftovers = []
        for proc in alive:
            try:
                leftovers.append(f"{proc.pid} {' '.join(proc.cmdline())}")
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=timeout)
        self.process = None
        return leftovers

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Notebook7(JupyterLab):
    """A Jupyter Notebook 7 server serving ``root``; a context manager. Its pages are
    built of JupyterLab's components (``.jp-Notebook``, ``.jp-Cell``, ``.jp-OutputArea``)."""

    name = "Notebook 7"
    module = "notebook"
    # The JupyterLab server extension runs in the same server: the same options apply.
    app_options = JupyterLab.app_options
    notebook_path = "/notebooks/{name}"


# -- what every browser test does ---------------------------------------------------------


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook of code ``cells`` on the ``python3`` kernel at ``path``."""
    import nbformat

    notebook = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        }
    )
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)
    return path


@contextlib.contextmanager
def serving(kind: type[JupyterLab], root: Path, home: Path) -> Iterator[JupyterLab]:
    """A ``kind`` server on ``root``, stopped at the end; fails if it left processes."""
    server = kind(root, home).start()
    try:
        yield server
    finally:
        leftovers = server.stop()
        assert not leftovers, f"processes left after shutdown (killed): {leftovers}"


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1100) -> Iterator[Any]:
    """A page of a headless Chromium (the system's), closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(120_000)
            yield page
        finally:
            browser.close()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """``check()``'s first true value, polled; fails saying it never saw ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.2)


def run_cell(page: Any, server: JupyterLab, index: int, timeout: float = 300.0) -> Any:
    """Run cell ``index`` with Shift+Enter; wait until it ran; return its output area.
    The server notes the processes started meanwhile, for its leak check."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    prompt = cell.locator(".jp-InputPrompt")

    def finished() -> bool:
        server.watch()
        return bool(re.fullmatch(r"\[\d+\]:", prompt.inner_text().strip()))

    wait_until(finished, f"cell {index} finished", timeout)
    server.watch()
    return cell.locator(".jp-OutputArea")

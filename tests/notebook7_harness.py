"""Notebook 7 on loopback, as ``browser_harness.JupyterLab`` runs JupyterLab.

The same temporary Jupyter environment, token, port and shutdown (every kernel and
every process they started); only the server (``python -m notebook``) and the page of
a notebook (``/notebooks/NAME``) differ. Notebook 7 draws cells with JupyterLab's
classes (``.jp-Cell``, ``.jp-OutputArea``), so a test drives both alike.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
from typing import Any

from browser_harness import JupyterLab

__all__ = ["Notebook7", "missing_notebook7"]


def missing_notebook7() -> str | None:
    """Why Notebook 7 cannot run here, or ``None``."""
    try:
        import notebook
    except ImportError:
        return "notebook is not installed (pip install 'notebook>=7')"
    major = int(str(getattr(notebook, "__version__", "0")).split(".")[0] or 0)
    return None if major >= 7 else f"notebook {notebook.__version__} is older than 7"


class Notebook7(JupyterLab):
    """A Notebook 7 server serving ``root``; a context manager."""

    def notebook_url(self, name: str) -> str:
        return f"{self.base}/notebooks/{name}?token={self.token}"

    def start(self, timeout: float = 120.0) -> Notebook7:
        command = [
            self.python,
            "-m",
            "notebook",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.open_browser=False",
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
                raise RuntimeError(f"Notebook exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.api("GET", "/api/status")
                return self
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Notebook did not answer in {timeout}s:\n{self.log()}"
                    ) from exc
                time.sleep(0.25)

    def __enter__(self) -> Any:
        return self.start()

"""Record the names this process registers with multiprocessing's resource tracker.

Loaded at start-up by every Python process of a test session: ``tests/conftest.py``
puts this folder on ``PYTHONPATH`` and names a log in ``MPNB_TEST_SHM_LOG`` (children
inherit both; forked ones inherit the patch). A shared-memory segment or a semaphore
that multiprocessing (mpnb's included) creates is registered by the process that
creates it, so the log lists what the session's own processes created in /dev/shm, and
the leak check counts only those (``leaks.session_created``), never another program's.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ENV", "install"]

ENV = "MPNB_TEST_SHM_LOG"


def install(path: str) -> None:
    """Append ``<rtype> <name>`` to ``path`` at each ``resource_tracker.register``."""
    from multiprocessing import resource_tracker

    original: Any = resource_tracker.register
    if getattr(original, "_mpnb_audit", False):
        return

    def register(name: str, rtype: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{rtype} {name}\n".encode())
            finally:
                os.close(fd)
        except OSError:
            pass
        original(name, rtype)

    register._mpnb_audit = True  # type: ignore[attr-defined]
    resource_tracker.register = register


if os.environ.get(ENV):
    install(os.environ[ENV])

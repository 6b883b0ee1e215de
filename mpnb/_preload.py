"""What mpnb's fork server imports once, so that each child it forks starts with it: the
preload list, the parent's main module, and the modules the parent's targets come from.

A child of a fork server would otherwise import its target's module itself, every time.
The server *learns* such a module when the parent first starts a process with a target
from it, and imports it so that later children have it already. A child must see what a
fresh import would give it, so:

- A module is learned only if importing it brings in nothing but user modules (``.py``
  files outside the standard library and site-packages: ``mpnb._world.user_file``), the
  standard library and mpnb. A trial import in a throwaway child of the server checks
  that first; a module that imports a third-party package (numpy reads
  ``OMP_NUM_THREADS`` as it loads) is left to each child, as before.
- The user modules a learned import brought in are re-imported in the server, all of them
  and in the order learned, when one of their files changes on disk and when the
  parent's environ, cwd or ``sys.path`` change: a child never gets a module from an old
  file or an old world.
- A module that fails to import (or to import in time) is not learned: each child imports
  it and reports the error where the user sees it.

A leaf module of the fork server (``mpnb.forkserver``): the standard library and
``mpnb._world`` only.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from multiprocessing import process, spawn

from ._world import user_file

__all__ = ["Learned", "import_main", "import_preload"]

#: Seconds a trial import may take before the module is left to each child.
TRIAL_TIMEOUT = 10.0

# (module name, its file, (mtime_ns, size) when imported)
_UserFile = tuple[str, str, tuple[int, int]]


def import_main(path: str | None, name: str | None) -> None:
    """Import the parent's main module as ``__mp_main__``, as each child would (a child
    whose ``__main__`` is already that module skips it: ``spawn.prepare``)."""
    current = process.current_process()
    current._inheriting = True  # type: ignore[attr-defined]
    try:
        if path is not None:
            spawn.import_main_path(path)
        elif name is not None:
            spawn._fixup_main_from_name(name)  # type: ignore[attr-defined]
    except Exception:
        pass  # each child imports it again and reports the error where the user sees it
    finally:
        del current._inheriting  # type: ignore[attr-defined]


def import_preload(names: list[str]) -> None:
    """Import the preload list (``set_forkserver_preload``). A missing name is skipped, as
    in the standard library's server; a module that raises is skipped with a line on
    stderr (a child that needs it imports it and reports the error itself)."""
    for name in names:
        try:
            __import__(name)
        except ImportError:
            pass
        except Exception as exc:
            print(f"mpnb's fork server could not preload {name!r}: {exc!r}", file=sys.stderr)


def _allowed(name: str) -> bool:
    """A module a learned import may bring in: its import-time state comes from files a
    re-import reproduces (user modules) or depends on nothing that changes (the standard
    library, mpnb)."""
    module = sys.modules.get(name)
    if module is None:
        return True
    top = name.partition(".")[0]
    return top in sys.stdlib_module_names or top == "mpnb" or user_file(name, module) is not None


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _trial(name: str) -> bool:
    """Whether importing ``name`` brings in only allowed modules, tried in a throwaway
    child (the server itself imports nothing it could not take back)."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return False
    if pid == 0:  # pragma: no cover - the throwaway child
        ok = b"0"
        try:
            os.close(r)
            before = set(sys.modules)
            __import__(name)
            ok = b"1" if all(_allowed(m) for m in set(sys.modules) - before) else b"0"
        except BaseException:
            pass
        finally:
            os.write(w, ok)
            os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], TRIAL_TIMEOUT)
        answer = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if not answer:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # the server's own reaping got it first
    return answer == b"1"


class Learned:
    """The server's learned modules and the user files they brought in."""

    def __init__(self) -> None:
        self._names: list[str] = []  # learned, in order
        self._refused: set[str] = set()
        self._files: list[_UserFile] = []  # the user modules their imports brought in

    def learn(self, names: list[str]) -> None:
        for name in names:
            if name in self._names or name in self._refused:
                continue
            if name in sys.modules:
                self._names.append(name)  # the server has it already: nothing to track
                continue
            if not _trial(name) or not self._import(name):
                self._refused.add(name)
                continue
            self._names.append(name)

    def _import(self, name: str) -> bool:
        before = set(sys.modules)
        try:
            __import__(name)
        except Exception:
            return False
        for module_name in sys.modules.keys() - before:
            module = sys.modules.get(module_name)
            path = None if module is None else user_file(module_name, module)
            stamp = None if path is None else _stamp(path)
            if path is not None and stamp is not None:
                self._files.append((module_name, path, stamp))
        return True

    def refresh(self) -> None:
        """Re-import the learned user modules if one of their files changed."""
        if any(_stamp(path) != stamp for _, path, stamp in self._files):
            self.reimport()

    def reimport(self) -> None:
        """Import the learned user modules again from their files (the world changed)."""
        if not self._files:
            return
        for module_name, _, _ in self._files:
            sys.modules.pop(module_name, None)
        names, self._names, self._files = self._names, [], []
        for name in names:
            if name in sys.modules:
                self._names.append(name)
            elif self._import(name):
                self._names.append(name)
            else:
                self._refused.add(name)

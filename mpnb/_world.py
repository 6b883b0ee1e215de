"""The notebook's world as it is now, carried to children: environ, cwd, sys.path, modules.

A notebook is a live program: between cells the user changes ``os.environ``, the working
directory or ``sys.path``, and edits and reloads helper modules. A child must start
from that world, not from the one a fork server or a warm worker was started in.

- ``WorldSetup`` (``setup_for``, a start hook of ``mpnb.process``): the whole environ,
  cwd and ``sys.path`` at ``Process.start``; a pool worker's also records the user
  modules' stamps. Its pickle *applies* it where it is unpickled, so the process object
  that follows (target, args) is unpickled in that world: an import that reads
  ``OMP_NUM_THREADS`` sees the new value. Not needed under fork (nothing is pickled).
- ``Tracker`` and ``Sync``: a warm pool's per-run update. Only the environ keys that
  changed since the pool started travel, with cwd and ``sys.path`` and the stamps of
  user modules; a worker skips what it already applied.
- User modules: modules the kernel has loaded from a ``.py`` file outside the standard
  library, site-packages and mpnb (the notebook's folder, a path the user added). A
  module's stamp is ``(mtime_ns, size, reloads)``: ``reloads`` counts the times the
  kernel gave it a new ``__spec__`` (``importlib.reload`` and ``%autoreload`` do). A
  worker that holds a module whose stamp differs from the one it last saw re-imports it
  (``importlib.reload``) before it unpickles the code that uses it.

A leaf module: the standard library only.
"""

from __future__ import annotations

import importlib
import os
import site
import sys
import sysconfig
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = [
    "Stamp",
    "WorldSetup",
    "Sync",
    "Tracker",
    "setup_for",
    "environ_snapshot",
    "user_file",
    "apply_environ",
    "user_modules",
    "module_stamp",
    "sync_modules",
    "fresh_reference",
]

# (file mtime in ns, file size, times the kernel reloaded it)
Stamp = tuple[int, int, int]

# -- the kernel side: which modules are the user's, and their stamps ----------------------

# name -> (module object, its real file if it is a user module, else None)
_kinds: dict[str, tuple[ModuleType, str | None]] = {}
# name -> (the __spec__ object last seen, reloads counted)
_reloads: dict[str, tuple[object, int]] = {}
_system: tuple[str, ...] | None = None


def _system_dirs() -> tuple[str, ...]:
    """Folders whose modules are never the user's: the stdlib, site-packages, mpnb."""
    global _system
    if _system is None:
        dirs = {
            sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")
        }
        try:
            dirs.update(site.getsitepackages())
            dirs.add(site.getusersitepackages())
        except AttributeError:  # a virtualenv's old site.py
            pass
        dirs.add(os.path.dirname(os.path.abspath(__file__)))  # mpnb itself
        _system = tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)
    return _system


def user_file(name: str, module: ModuleType) -> str | None:
    """The real path of ``module`` if it is a user module (a ``.py`` file outside the
    standard library, site-packages and mpnb), else ``None``."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    if name.partition(".")[0] in sys.stdlib_module_names or name == "__main__":
        return None
    path = os.path.realpath(file)
    if path.startswith(_system_dirs()) or "-packages" + os.sep in path:
        return None
    return path


def _reload_count(name: str, module: ModuleType) -> int:
    spec = getattr(module, "__spec__", None)
    seen = _reloads.get(name)
    if seen is None:
        _reloads[name] = (spec, 0)
        return 0
    if seen[0] is spec:
        return seen[1]
    count = seen[1] + 1
    _reloads[name] = (spec, count)
    return count


def _stamp(name: str, module: ModuleType, path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, _reload_count(name, module))


def _classify(name: str, module: ModuleType) -> str | None:
    known = _kinds.get(name)
    if known is not None and known[0] is module:
        return known[1]
    path = user_file(name, module)
    _kinds[name] = (module, path)
    return path


def user_modules() -> dict[str, Stamp]:
    """The stamps of the user modules loaded here (cheap: each module is classified once)."""
    stamps: dict[str, Stamp] = {}
    for name, module in list(sys.modules.items()):
        if module is None:
            continue
        path = _classify(name, module)
        if path is not None:
            stamp = _stamp(name, module, path)
            if stamp is not None:
                stamps[name] = stamp
    return stamps


def module_stamp(name: str) -> Stamp | None:
    """The stamp of module ``name`` if it is a loaded user module."""
    module = sys.modules.get(name)
    if module is None:
        return None
    path = _classify(name, module)
    return None if path is None else _stamp(name, module, path)


# -- the child side -----------------------------------------------------------------------

# The stamp of each user module this process last synced to.
_synced: dict[str, Stamp] = {}
# (tracker token, version) of the last warm-pool update applied here.
_applied: tuple[str, int] | None = None


def sync_modules(stamps: dict[str, Stamp]) -> None:
    """Re-import each module held here whose stamp differs from the one last seen."""
    for name, stamp in stamps.items():
        before = _synced.get(name)
        _synced[name] = stamp
        if before is None or before == stamp:
            continue
        module = sys.modules.get(name)
        if module is not None:
            importlib.reload(module)


def _environ_store() -> Any:
    """``os.environ`` as it stores itself: on POSIX its dict of bytes (compared with
    another in C, where comparing ``os.environ`` decodes every entry), else ``os.environ``."""
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) else os.environ


def environ_snapshot() -> dict[Any, Any]:
    """A copy of the environ as ``apply_environ`` takes it (bytes on POSIX)."""
    return dict(_environ_store())


def apply_environ(environ: dict[Any, Any]) -> None:
    store = _environ_store()
    if environ == store:
        return
    # The same keys as the snapshot: bytes through os.environb, str through os.environ.
    target: Any = os.environ
    if store is not os.environ and any(isinstance(k, bytes) for k in environ):
        target = os.environb
    for key in [k for k in target if k not in environ]:
        del target[key]
    for key, value in environ.items():
        if target.get(key) != value:
            target[key] = value


def _apply_place(cwd: str, path: list[str]) -> None:
    try:
        if os.getcwd() != cwd:
            os.chdir(cwd)
    except OSError:  # removed since, or not reachable from here
        pass
    if sys.path != path:
        sys.path[:] = path


class _Applied:
    """What an unpickled set-up is: already applied, so running it does nothing."""

    def __call__(self) -> None:
        pass

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _Applied, ()


def _apply_setup(
    environ: dict[Any, Any], cwd: str, path: list[str], modules: dict[str, Stamp]
) -> _Applied:
    apply_environ(environ)
    _apply_place(cwd, path)
    _synced.update(modules)  # what this process starts with (or will import) is current
    return _Applied()


class WorldSetup:
    """A start hook's set-up: the parent's environ, cwd, ``sys.path`` (and, for a pool
    worker, its user modules' stamps). Unpickling it applies it."""

    __slots__ = ("environ", "cwd", "path", "modules")

    def __init__(
        self, environ: dict[Any, Any], cwd: str, path: list[str], modules: dict[str, Stamp]
    ) -> None:
        # ``environ`` from ``environ_snapshot`` (bytes on POSIX), or a dict of str.
        self.environ, self.cwd, self.path, self.modules = environ, cwd, path, modules

    def __reduce__(self) -> tuple[Callable[..., _Applied], tuple[Any, ...]]:
        return _apply_setup, (self.environ, self.cwd, self.path, self.modules)

    def __call__(self) -> None:
        _apply_setup(self.environ, self.cwd, self.path, self.modules)


def setup_for(process: Any) -> WorldSetup | None:
    """Start hook: the world ``process`` should start in (``None`` under fork, which
    copies it, and forkserver, whose server takes it with each request: ``mpnb.forkserver``;
    a pool worker's records the modules' stamps)."""
    pooled = getattr(process, "_mpnb_pool", None) is not None
    method = getattr(process, "_effective_start_method", None)
    # Fork copies the world; mpnb's fork server applies it to itself before it forks.
    if not pooled and method is not None and method() in ("fork", "forkserver"):
        return None
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    environ = environ_snapshot()
    return WorldSetup(environ, cwd, list(sys.path), user_modules() if pooled else {})


def _apply_sync(
    key: tuple[str, int],
    environ: dict[str, str | None],
    cwd: str,
    path: list[str],
    modules: dict[str, Stamp],
) -> _Applied:
    global _applied
    if _applied != key:
        for name, value in environ.items():
            if value is None:
                os.environ.pop(name, None)
            elif os.environ.get(name) != value:
                os.environ[name] = value
        _apply_place(cwd, path)
        _applied = key
    sync_modules(modules)
    return _Applied()


class Sync:
    """A warm pool's update for one run (``Tracker.sync``). Unpickling it applies it, so
    put it before what must be unpickled in the new world."""

    __slots__ = ("key", "environ", "cwd", "path", "modules")

    def __init__(
        self,
        key: tuple[str, int],
        environ: dict[str, str | None],
        cwd: str,
        path: list[str],
        modules: dict[str, Stamp],
    ) -> None:
        self.key, self.environ, self.cwd, self.path = key, environ, cwd, path
        self.modules = modules

    def __reduce__(self) -> tuple[Callable[..., _Applied], tuple[Any, ...]]:
        return _apply_sync, (self.key, self.environ, self.cwd, self.path, self.modules)


class Tracker:
    """The kernel's side of one warm pool: what changed since its workers started."""

    def __init__(self) -> None:
        self.token = os.urandom(6).hex()
        self.version = 0
        self._environ = dict(os.environ)
        self._touched: set[str] = set()
        self._place: tuple[str, list[str]] | None = None

    def sync(self) -> Sync:
        """This run's update: environ keys changed since the pool started (``None``:
        unset), cwd, ``sys.path``, user modules."""
        environ = os.environ
        if len(environ) != len(self._environ) or environ != self._environ:
            now = dict(environ)
            keys = now.keys() | self._environ.keys()
            self._touched.update(k for k in keys if now.get(k) != self._environ.get(k))
            self._environ = now
            self.version += 1
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = ""
        place = (cwd, list(sys.path))
        if place != self._place:
            self._place = place
            self.version += 1
        changed = {k: self._environ.get(k) for k in self._touched}
        return Sync((self.token, self.version), changed, place[0], place[1], user_modules())


def _second(_first: object, second: Any) -> Any:
    return second


class _ModuleSync:
    __slots__ = ("stamps",)

    def __init__(self, stamps: dict[str, Stamp]) -> None:
        self.stamps = stamps

    def __reduce__(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return sync_modules, (self.stamps,)


class _Fresh:
    """A function by reference, pickled after its module's stamp: unpickling it
    re-imports the module first if it changed, then looks the function up."""

    __slots__ = ("stamps", "func")

    def __init__(self, stamps: dict[str, Stamp], func: Any) -> None:
        self.stamps, self.func = stamps, func

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return _second, (_ModuleSync(self.stamps), self.func)


def fresh_reference(func: Any) -> tuple[Any, Stamp | None]:
    """``func`` (imported by reference) wrapped to be looked up in its module as it is
    now, and the module's stamp; ``func`` itself and ``None`` if no user module."""
    name = getattr(func, "__module__", None)
    stamp = module_stamp(name) if isinstance(name, str) else None
    if stamp is None or name is None:
        return func, None
    return _Fresh({name: stamp}, func), stamp

"""Generate, at run time, the modules that run CPython's multiprocessing tests on mpnb.

Nothing generated here is committed: it is CPython's code (``test/_test_multiprocessing.py``
of the running interpreter), rewritten into a build folder.

Two modes:

- ``dropin``: a copy of ``_test_multiprocessing.py`` in which the module under test is
  mpnb. ``import multiprocessing`` becomes ``import mpnb as multiprocessing``;
  ``multiprocessing.X`` submodules become ``mpnb.X`` where ``import mpnb.X`` works and
  stay the standard library's where it does not (recorded in the mapping report). The
  names imported from an mpnb module are checked here: a name mpnb lacks is imported
  from the standard library instead, so the rest of the suite still runs, and recorded
  as a failure (``<import> mpnb.X.name``). Code that the suite runs in a fresh
  interpreter (``-c`` strings, ``mp_preload.py``, ``mp_fork_bomb.py``) is rewritten the
  same way.
- ``ext``: the standard library's suite unchanged, with mpnb's pickler installed in the
  test process (what ``%load_ext mpnb`` does) before the tests run.

Both get one small module per start method that calls the suite's
``install_tests_in_module_dict(globals(), method)``, as CPython's
``test.test_multiprocessing_<method>`` does.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

COPY_MODULE = "_mpnb_test_multiprocessing"
HELPER_SCRIPTS = ("mp_fork_bomb.py", "mp_preload.py", "mp_preload_main.py", "mp_preload_flush.py")
METHODS = ("forkserver", "spawn", "fork")
MODES = ("dropin", "ext")

# Harness bookkeeping, not API under test: the suite's module set-up and tear-down
# count dangling processes with ``multiprocessing.process._dangling`` and reap them with
# ``_cleanup``. mpnb's processes are the standard library's process classes (a mixin
# over them), so the standard library's ``process`` module tracks them; mpnb's own
# ``mpnb.process`` module does not re-export these private names.
STDLIB_BOOKKEEPING = ("process._dangling", "process._cleanup")


def stdlib_test_dir() -> Path:
    import test

    return Path(test.__file__).resolve().parent


def module_name(mode: str, method: str) -> str:
    return f"mpnb_conformance_{mode}_{method}"


@dataclass
class Report:
    """What the rewrite mapped where, and what mpnb lacks."""

    mpnb_modules: list = field(default_factory=list)  # multiprocessing.X -> mpnb.X
    stdlib_modules: list = field(default_factory=list)  # multiprocessing.X kept (no mpnb.X)
    missing_names: list = field(default_factory=list)  # mpnb.X.name imported, absent
    stdlib_patch_targets: list = field(default_factory=list)
    bookkeeping: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: sorted(set(v)) for k, v in self.__dict__.items()}


def _mpnb_module(sub: str):
    """``mpnb.<sub>`` if ``import mpnb.<sub>`` works, else None."""
    try:
        return importlib.import_module(f"mpnb.{sub}")
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == f"mpnb.{sub}" or f"mpnb.{sub}".startswith(exc.name + ".")):
            return None
        raise


class Rewriter:
    def __init__(self, report: Report, copy_module: str, preload_module: str):
        self.report = report
        self.copy_module = copy_module
        self.preload_module = preload_module

    # -- imports -----------------------------------------------------------------------
    def _module_target(self, sub: str) -> str:
        top = sub.split(".")[0]
        if _mpnb_module(top) is not None:
            self.report.mpnb_modules.append(f"multiprocessing.{sub} -> mpnb.{sub}")
            return f"mpnb.{sub}"
        self.report.stdlib_modules.append(f"multiprocessing.{sub}")
        return f"multiprocessing.{sub}"

    def _split_names(self, source_mod, mpnb_name: str, names: str, std_name: str):
        """(present, missing) of ``a, b as c`` names in ``source_mod``."""
        present, missing = [], []
        for item in (n.strip() for n in names.split(",")):
            if not item:
                continue
            name = item.split(" as ")[0].strip()
            if hasattr(source_mod, name):
                present.append(item)
            else:
                missing.append(item)
                self.report.missing_names.append(f"{mpnb_name}.{name}")
        return present, missing

    def _from_import(self, indent: str, sub: str | None, names: str, rest: str) -> str:
        mpnb_name = "mpnb" if sub is None else f"mpnb.{sub}"
        std_name = "multiprocessing" if sub is None else f"multiprocessing.{sub}"
        if sub is None:
            import mpnb as source_mod
        else:
            source_mod = _mpnb_module(sub)
            if source_mod is None:
                self.report.stdlib_modules.append(std_name)
                return f"{indent}from {std_name} import {names}{rest}"
            self.report.mpnb_modules.append(f"{std_name} -> {mpnb_name}")
        present, missing = self._split_names(source_mod, mpnb_name, names, std_name)
        parts = []
        if present:
            parts.append(f"from {mpnb_name} import {', '.join(present)}")
        if missing:
            parts.append(f"from {std_name} import {', '.join(missing)}  # MISSING in {mpnb_name}")
        return indent + "; ".join(parts) + rest

    def line(self, text: str) -> str:
        m = re.match(r"^(\s*)import multiprocessing as (\w+)(.*)$", text)
        if m:
            return f"{m[1]}import mpnb as {m[2]}{m[3]}"
        m = re.match(r"^(\s*)import multiprocessing\.([\w.]+)(.*)$", text)
        if m:
            target = self._module_target(m[2])
            return f"{m[1]}import {target}; import mpnb as multiprocessing{m[3]}"
        m = re.match(r"^(\s*)import multiprocessing\s*,(.*)$", text)
        if m:
            return f"{m[1]}import mpnb as multiprocessing,{m[2]}"
        m = re.match(r"^(\s*)import multiprocessing(\s*(#.*)?)$", text)
        if m:
            return f"{m[1]}import mpnb as multiprocessing{m[2]}"
        m = re.match(r"^(\s*)from multiprocessing import ([\w, ]+?)(\s*(#.*)?)$", text)
        if m:
            return self._from_import(m[1], None, m[2], m[3])
        m = re.match(r"^(\s*)from multiprocessing\.([\w.]+) import ([\w, ]+?)(\s*(#.*)?)$", text)
        if m:
            return self._from_import(m[1], m[2], m[3], m[4])
        return text

    # -- whole file ----------------------------------------------------------------------
    def _literal(self, m: re.Match) -> str:
        quote, path = m[1], m[2]
        if path in ("", "."):
            return f"{quote}mpnb{path}{quote}"
        parts = path[1:].split(".")
        mod = _mpnb_module(parts[0]) if parts[0] else None
        if mod is not None:
            obj = mod
            for attr in parts[1:]:
                if not hasattr(obj, attr):
                    self.report.stdlib_patch_targets.append(f"multiprocessing{path}")
                    return m[0]
                obj = getattr(obj, attr)
            return f"{quote}mpnb{path}{quote}"
        return m[0]

    def _attribute(self, m: re.Match) -> str:
        """``multiprocessing.X.Y`` where mpnb.X is mpnb's own module without Y."""
        sub, name = m[1], m[2]
        if f"{sub}.{name}" in STDLIB_BOOKKEEPING:
            return m[0]
        mod = _mpnb_module(sub)
        if mod is None or hasattr(mod, name):
            return m[0]
        self.report.missing_names.append(f"mpnb.{sub}.{name}")
        return f"_std_multiprocessing.{sub}.{name}"

    def text(self, source: str) -> str:
        out = "\n".join(self.line(line) for line in source.split("\n"))
        # Module paths in string literals: mock.patch targets, _TestImportStar's names.
        out = re.sub(r"""(['"])multiprocessing((?:\.[\w]*)*)\1""", self._literal, out)
        # The suite imports itself in a child (TestFlags) and preloads the forkserver test.
        out = out.replace(
            "from test._test_multiprocessing import", f"from {self.copy_module} import"
        )
        out = re.sub(
            r"'test\.test_multiprocessing_forkserver[\w.]*'", repr(self.preload_module), out
        )
        out = re.sub(r"""(?<![\w.'"])multiprocessing\.([a-z_]+)\.(\w+)\b""", self._attribute, out)
        # _TestImportStar lists the .py files of the package's folder and removes the
        # standard library's platform-specific popen_* modules by name: mpnb has none.
        out, n = re.subn(
            r"modules\.remove\(('multiprocessing\.popen_\w+')\)",
            r"modules.remove(\1) if \1 in modules else None",
            out,
        )
        if n:
            self.report.bookkeeping.append("_TestImportStar: popen_* removals made optional")
        for name in STDLIB_BOOKKEEPING:
            if f"multiprocessing.{name}" in out:
                self.report.bookkeeping.append(f"multiprocessing.{name}")
                out = re.sub(
                    rf"(?<![\w.])multiprocessing\.{re.escape(name)}\b",
                    f"_std_multiprocessing.{name}",
                    out,
                )
        return out


PER_METHOD = """\
# Generated by tests/conformance/generate.py; mirrors test.test_multiprocessing_{method}.
import multiprocessing
import sys
import unittest
from test import support

if getattr(multiprocessing.current_process(), "_inheriting", False):
    # A spawn or forkserver child loading its target: the suite's import-time check that
    # semaphores work (made and unlinked at once) ran in the test process already. Here
    # a child killed while importing (test_terminate, test_many_processes) would leave
    # that semaphore in /dev/shm.
    support.skip_if_broken_multiprocessing_synchronize = lambda: None

if support.PGO:
    raise unittest.SkipTest("test is not helpful for PGO")
{prelude}
install_tests_in_module_dict(globals(), {method!r})
{postlude}
if __name__ == "__main__":
    unittest.main()
"""

DROPIN_PRELUDE = f"from {COPY_MODULE} import install_tests_in_module_dict\n"

EXT_PRELUDE = """\
from test._test_multiprocessing import install_tests_in_module_dict
import mpnb._pickle
"""

# What ``%load_ext mpnb`` turns on for the standard library, applied in the test
# process only (the kernel), around the suite's own module set-up and tear-down.
EXT_POSTLUDE = """
_suite_setUpModule = setUpModule
_suite_tearDownModule = tearDownModule


def setUpModule():
    mpnb._pickle.install()
    _suite_setUpModule()


def tearDownModule():
    try:
        _suite_tearDownModule()
    finally:
        mpnb._pickle.uninstall()
"""


def generate(build_dir: Path) -> Report:
    """Write the rewritten suite and the per-mode, per-method modules into build_dir."""
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    report = Report()
    rewriter = Rewriter(report, COPY_MODULE, module_name("dropin", "forkserver"))
    src_dir = stdlib_test_dir()
    source = (src_dir / "_test_multiprocessing.py").read_text(encoding="utf-8")
    header = (
        "# Generated by tests/conformance/generate.py from "
        f"{src_dir / '_test_multiprocessing.py'}: CPython's code, the module under "
        "test replaced by mpnb.\nimport multiprocessing as _std_multiprocessing\n"
    )
    (build_dir / f"{COPY_MODULE}.py").write_text(header + rewriter.text(source), encoding="utf-8")
    for script in HELPER_SCRIPTS:
        if (src_dir / script).exists():
            text = (src_dir / script).read_text(encoding="utf-8")
            (build_dir / script).write_text(rewriter.text(text), encoding="utf-8")
    for method in METHODS:
        (build_dir / f"{module_name('dropin', method)}.py").write_text(
            PER_METHOD.format(method=method, prelude=DROPIN_PRELUDE, postlude="")
        )
        (build_dir / f"{module_name('ext', method)}.py").write_text(
            PER_METHOD.format(method=method, prelude=EXT_PRELUDE, postlude=EXT_POSTLUDE)
        )
    (build_dir / "mapping.json").write_text(json.dumps(report.as_dict(), indent=2))
    return report


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("build/conformance")
    print(json.dumps(generate(out).as_dict(), indent=2))

"""Fixtures for the whole suite: start methods, real kernels, and leak checks.

- ``start_method`` runs a test once per start method (spawn, forkserver, fork);
  ``ctx`` is ``mpnb.get_context(start_method)``.
- ``kernel`` is a fresh ipykernel per test, ``module_kernel`` one shared by a module,
  ``make_kernel(env=..., cwd=...)`` a factory for more; all are ``KernelHarness`` objects
  (tests/kernel_harness.py) and fail their test if a process the kernel had outlives it.
  Tests using them are marked ``kernel`` automatically.
- Every test fails if it leaves a child process alive (3 s grace). Exempt: the resource
  tracker and forkserver, and what processes older than the test started (a module
  fixture's kernel or server: that fixture checks them). Orphans count: the test process
  adopts them. Mark a test ``no_leak_check`` to opt out.
- The session fails if /dev/shm holds new multiprocessing or mpnb entries at its end that
  the session's own processes created (each logs what it registers with a resource
  tracker: tests/shm_audit/), or if child processes are still alive. Entries of other
  programs on the machine never count. MPNB_TEST_SHM_CHECK=warn (or off) relaxes that
  check.

Every test has a timeout (``timeout`` in pyproject.toml; ``@pytest.mark.timeout(s)``
for a shorter one).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import tempfile
import time

import pytest

# Before anything imports jupyter_core: use the platformdirs paths, without the warning.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

import leaks
from kernel_harness import KernelHarness
from shm_audit import sitecustomize as shm_audit

START_METHODS = ("spawn", "forkserver", "fork")
KERNEL_FIXTURES = frozenset({"kernel", "module_kernel", "make_kernel"})

# Seconds a test's child processes get to exit after it ended.
TEST_EXIT_GRACE = 3.0
# Seconds /dev/shm entries get to disappear at the session end (finalizers, trackers).
SHM_GRACE = 2.0

_SHM_BEFORE = pytest.StashKey[set]()
_SHM_LOG = pytest.StashKey[str]()
_SESSION_LEAKS = pytest.StashKey[leaks.SessionLeaks]()


def _become_subreaper() -> None:
    """Make orphaned descendants our children instead of init's (Linux only).

    A worker whose parent died without stopping it is exactly the leak mpnb must prevent;
    reparented to init it would vanish from ``children(recursive=True)`` and from every
    check here. As a subreaper the test process adopts it, so the checks see it.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_leak_check: do not fail the test for child processes left alive"
    )
    _become_subreaper()
    _hear_interrupts()
    config.stash[_SHM_BEFORE] = leaks.shm_entries()
    _audit_shm(config)


def _hear_interrupts() -> None:
    """A session started in the background by a shell (``make test &``) ignores SIGINT,
    and so would every child it starts: the tests of interrupts need it heard."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _audit_shm(config: pytest.Config) -> None:
    """Have every process of the session log what it registers with a resource tracker
    (``shm_audit/sitecustomize.py``): the /dev/shm check counts only that."""
    fd, path = tempfile.mkstemp(prefix="mpnb-shm-audit-", suffix=".log")
    os.close(fd)
    config.stash[_SHM_LOG] = path
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shm_audit")
    os.environ[shm_audit.ENV] = path
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (folder, os.environ.get("PYTHONPATH")) if p
    )
    shm_audit.install(path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if KERNEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kernel)


# -- start methods ----------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param(
            m,
            id=m,
            marks=pytest.mark.skipif(
                m not in multiprocessing.get_all_start_methods(),
                reason=f"start method {m!r} not available on {sys.platform}",
            ),
        )
        for m in START_METHODS
    ]
)
def start_method(request: pytest.FixtureRequest) -> str:
    """The name of a start method; a test using it runs once per method."""
    return request.param


@pytest.fixture
def ctx(start_method: str):
    """``mpnb.get_context(start_method)``."""
    import mpnb

    return mpnb.get_context(start_method)


# -- kernels ----------------------------------------------------------------------------


def _close_all(harnesses: list[KernelHarness]) -> None:
    errors = []
    for h in reversed(harnesses):
        try:
            h.close()
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def make_kernel():
    """Factory: ``make_kernel(env=None, cwd=None) -> KernelHarness``; all closed after the
    test, which fails if a process one of them had is still alive."""
    made: list[KernelHarness] = []

    def make(*, env: dict[str, str] | None = None, cwd: str | None = None) -> KernelHarness:
        h = KernelHarness.start(env=env, cwd=cwd)
        made.append(h)
        return h

    yield make
    _close_all(made)


@pytest.fixture
def kernel(make_kernel) -> KernelHarness:
    """A fresh ipykernel on this interpreter, for this test only."""
    return make_kernel()


@pytest.fixture(scope="module")
def module_kernel():
    """One ipykernel shared by the tests of a module (state carries over between them).
    What it started is checked when the module ends, not after each test."""
    h = KernelHarness.start()
    yield h
    _close_all([h])


# -- leak checks ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_leftover_processes(request: pytest.FixtureRequest):
    """Fail the test if a child process it started is still alive after it."""
    if request.node.get_closest_marker("no_leak_check"):
        yield
        return
    before = leaks.live_descendants()
    yield
    # What processes older than the test (a module fixture's kernel or server) started
    # is left to the fixture that owns them.
    new = {p for p in leaks.live_descendants() - before if not leaks.descends_from(p, before)}
    left = leaks.wait_gone(new, TEST_EXIT_GRACE)
    if left:
        report = leaks.describe(left)
        leaks.reap(left)
        pytest.fail(
            f"{len(left)} child process(es) still alive {TEST_EXIT_GRACE:g} s after the "
            f"test (now killed):\n{report}",
            pytrace=False,
        )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = leaks.SessionLeaks()
    gc.collect()

    left = leaks.wait_gone(leaks.live_descendants(), TEST_EXIT_GRACE)
    if left:
        found.processes = leaks.describe(left)
        leaks.reap(left)

    shm_check = os.environ.get("MPNB_TEST_SHM_CHECK", "fail")
    if shm_check != "off":
        before = session.config.stash.get(_SHM_BEFORE, set())
        deadline = time.monotonic() + SHM_GRACE
        ours = leaks.session_created(session.config.stash.get(_SHM_LOG, ""))
        while (new := (leaks.shm_entries() - before) & ours) and time.monotonic() < deadline:
            time.sleep(0.1)
            ours = leaks.session_created(session.config.stash.get(_SHM_LOG, ""))
        # Entries that a process outside this session holds belong to someone else.
        found.shm = sorted(leaks.not_held_by_others(new))
    log = session.config.stash.get(_SHM_LOG, "")
    if log:
        try:
            os.unlink(log)
        except OSError:
            pass

    session.config.stash[_SESSION_LEAKS] = found
    fails = found.processes or (found.shm and shm_check == "fail")
    if fails and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    found = config.stash.get(_SESSION_LEAKS, None)
    if found:
        terminalreporter.section(
            "leaks found at the end of the session", sep="=", red=True, bold=True
        )
        terminalreporter.line(found.report(), red=True)

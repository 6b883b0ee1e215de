"""mpnb's fork server (mpnb/forkserver.py): a child starts in its parent's current world,
whatever changed since the server started; the server's death, the parent's death,
threads and forked parents; preloading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

import mpnb
from mpnb import forkserver

pytestmark = [pytest.mark.core, pytest.mark.timeout(120)]

WAIT = 30


@pytest.fixture
def fs():
    return mpnb.get_context("forkserver")


def report_world(conn, key: str) -> None:
    conn.send((os.environ.get(key), os.getcwd(), list(sys.path), mpnb.current_process().name))
    conn.close()


def child_world(fs, key: str, name: str | None = None):
    r, w = fs.Pipe(duplex=False)
    p = fs.Process(target=report_world, args=(w, key), name=name)
    p.start()
    w.close()
    try:
        assert r.poll(WAIT), "the child sent nothing"
        return r.recv()
    finally:
        p.join(WAIT)
        r.close()
        assert p.exitcode == 0


def test_a_child_starts_in_the_parents_world_as_it_is_now(fs, tmp_path, monkeypatch):
    first = child_world(fs, "MPNB_FS_TEST", name="first")
    assert first[0] is None and first[3] == "first"
    # The world changes after the server started: each later child sees the change.
    monkeypatch.setenv("MPNB_FS_TEST", "one")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    env, cwd, path, name = child_world(fs, "MPNB_FS_TEST", name="second")
    assert (env, cwd, path[0], name) == ("one", str(tmp_path), str(tmp_path), "second")
    monkeypatch.delenv("MPNB_FS_TEST")
    env, cwd, _, _ = child_world(fs, "MPNB_FS_TEST")
    assert env is None and cwd == str(tmp_path)


def exit_with(code: int) -> None:
    sys.exit(code)


def test_exit_codes_and_signals_come_back_from_the_server(fs):
    p = fs.Process(target=exit_with, args=(3,))
    p.start()
    p.join(WAIT)
    assert p.exitcode == 3
    p = fs.Process(target=time.sleep, args=(60,))
    p.start()
    p.kill()
    p.join(WAIT)
    assert p.exitcode == -signal.SIGKILL


def test_a_dead_server_is_replaced_and_its_running_child_reports_255(fs):
    p = fs.Process(target=time.sleep, args=(0.5,))
    p.start()
    pid = forkserver._forkserver._forkserver_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    p.join(WAIT)
    assert p.exitcode in (0, 255)  # whether the server reported it before it died
    q = fs.Process(target=exit_with, args=(0,))
    q.start()
    q.join(WAIT)
    assert q.exitcode == 0
    assert forkserver._forkserver._forkserver_pid not in (None, pid)


def started_name(results: list[int], i: int, fs) -> None:
    p = fs.Process(target=exit_with, args=(i % 7,))
    p.start()
    p.join(WAIT)
    results.append((i % 7) == p.exitcode)


def test_threads_starting_processes_at_once(fs):
    results: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda t=t: [started_name(results, t * 10 + i, fs) for i in range(8)]
        )
        for t in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert results == [True] * 32


def server_pid_of_a_grandchild(conn) -> None:
    import mpnb

    fs = mpnb.get_context("forkserver")
    p = fs.Process(target=exit_with, args=(0,))
    p.start()
    p.join(30)
    conn.send((mpnb.forkserver._forkserver._forkserver_pid, p.exitcode))
    conn.close()
    mpnb.forkserver._forkserver._stop()


def test_a_forked_child_starts_its_own_server(fs):
    p = fs.Process(target=exit_with, args=(0,))
    p.start()
    p.join(WAIT)
    ours = forkserver._forkserver._forkserver_pid
    r, w = mpnb.Pipe(duplex=False)
    child = mpnb.get_context("fork").Process(target=server_pid_of_a_grandchild, args=(w,))
    child.start()
    w.close()
    assert r.poll(WAIT)
    theirs, code = r.recv()
    child.join(WAIT)
    assert child.exitcode == 0 and code == 0
    assert theirs not in (None, ours)
    # Ours still answers: the child never wrote to our connection.
    p = fs.Process(target=exit_with, args=(4,))
    p.start()
    p.join(WAIT)
    assert p.exitcode == 4 and forkserver._forkserver._forkserver_pid == ours


def test_preload_takes_module_names_only():
    with pytest.raises(TypeError, match="module_names must be a list of strings"):
        mpnb.set_forkserver_preload([1, 2, 3])


def modules_present(conn, names: list[str]) -> None:
    conn.send([n in sys.modules for n in names])
    conn.close()


def test_a_new_server_imports_the_preload_list(fs):
    forkserver._forkserver._stop()
    mpnb.set_forkserver_preload(["__main__", "colorsys"])
    try:
        r, w = fs.Pipe(duplex=False)
        p = fs.Process(target=modules_present, args=(w, ["colorsys", "mpnb", "cloudpickle"]))
        p.start()
        w.close()
        assert r.poll(WAIT)
        assert r.recv() == [True, True, True]
        p.join(WAIT)
    finally:
        forkserver._forkserver._stop()
        mpnb.set_forkserver_preload(["__main__"])


SCRIPT = """
import os, sys, time
import mpnb

# Appends a line each time this module runs: once as __main__, once in the server.
with open(os.environ["MPNB_FS_IMPORTS"], "a") as f:
    f.write(__name__ + "\\n")

def work(i):
    return i * 2

if __name__ == "__main__":
    fs = mpnb.get_context("forkserver")
    for i in range(3):
        p = fs.Process(target=work, args=(i,))
        p.start()
        p.join(30)
        assert p.exitcode == 0, p.exitcode
    print(mpnb.forkserver._forkserver._forkserver_pid, flush=True)
    if sys.argv[1:] == ["linger"]:
        time.sleep(120)
"""


def test_the_main_module_is_imported_once_in_the_server_not_in_each_child(tmp_path):
    script = tmp_path / "main_once.py"
    script.write_text(SCRIPT)
    log = tmp_path / "imports.txt"
    env = {**os.environ, "MPNB_FS_IMPORTS": str(log)}
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=WAIT * 2
    )
    assert out.returncode == 0, out.stderr
    assert log.read_text().splitlines() == ["__main__", "__mp_main__"]


def test_the_server_exits_when_its_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "MPNB_FS_IMPORTS": str(tmp_path / "imports.txt")}
    parent = subprocess.Popen(
        [sys.executable, str(script), "linger"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        server = psutil.Process(int(parent.stdout.readline()))
        assert server.is_running()
    finally:
        parent.kill()
        parent.wait(WAIT)
        if parent.stdout is not None:
            parent.stdout.close()
    server.wait(WAIT)  # gone, not an orphan: its connection reached end of file


# -- the pid comes after start() ------------------------------------------------------------


def send_pid(conn) -> None:
    conn.send(os.getpid())
    conn.close()


def test_the_pid_read_after_start_is_the_childs_and_reaches_the_registry(fs):
    from mpnb.registry import REGISTRY

    r, w = fs.Pipe(duplex=False)
    p = fs.Process(target=send_pid, args=(w,), name="pid-check")
    p.start()
    w.close()
    assert r.poll(WAIT)
    assert p.pid == r.recv()
    p.join(WAIT)
    r.close()
    records = [rec for rec in REGISTRY.snapshot()[0] if rec.name == "pid-check"]
    assert records and records[-1].pid == p.pid and records[-1].exitcode == 0


def test_a_request_the_server_never_served_reads_no_pid_and_exit_code_255(fs):
    warm = fs.Process(target=exit_with, args=(0,))
    warm.start()
    warm.join(WAIT)
    server = forkserver._forkserver._forkserver_pid
    os.kill(server, signal.SIGSTOP)  # the request waits in the socket...
    try:
        p = fs.Process(target=exit_with, args=(0,))
        p.start()  # returns without waiting for the fork
    finally:
        os.kill(server, signal.SIGKILL)  # ...and the server dies before it reads it
    p.join(WAIT)
    assert p.pid is None and p.exitcode == 255
    p.terminate()  # nothing to signal: no error
    q = fs.Process(target=exit_with, args=(5,))
    q.start()
    q.join(WAIT)
    assert q.exitcode == 5  # a new server


# -- modules learned from targets -----------------------------------------------------------

LEARNED = """
import os

MODE = os.environ.get("MPNB_LEARN_MODE", "unset")
with open(os.environ["MPNB_LEARN_LOG"], "a") as f:
    f.write(f"{os.getpid()}\\n")

def answer(conn):
    conn.send((VERSION, MODE))
    conn.close()

VERSION = 1
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A fresh user module on sys.path that logs the pid of each process importing it,
    and a new fork server (what it learned is per server)."""
    name = f"mpnb_learned_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(LEARNED)
    log = tmp_path / "imports.log"
    monkeypatch.setenv("MPNB_LEARN_LOG", str(log))
    monkeypatch.syspath_prepend(str(tmp_path))
    forkserver._forkserver._stop()
    module = __import__(name)
    yield module, tmp_path / f"{name}.py", log
    sys.modules.pop(name, None)
    forkserver._forkserver._stop()


def answers(fs, module, count=1):
    out, pids = [], []
    for _ in range(count):
        r, w = fs.Pipe(duplex=False)
        p = fs.Process(target=module.answer, args=(w,))
        p.start()
        w.close()
        assert r.poll(WAIT), "the child sent nothing"
        out.append(r.recv())
        r.close()
        p.join(WAIT)
        assert p.exitcode == 0
        pids.append(p.pid)
    return out, pids


def importers(log) -> set[int]:
    return {int(line) for line in log.read_text().split()}


def test_a_targets_module_is_imported_in_the_server_not_in_each_child(fs, user_module):
    module, _, log = user_module
    out, pids = answers(fs, module, count=4)
    assert out == [(1, "unset")] * 4
    assert not importers(log) & set(pids)
    # The server learned it with the first request, before it forked the first child.
    assert module.__name__ in forkserver._forkserver._modules


def test_an_edited_module_reaches_the_next_child(fs, user_module):
    module, path, log = user_module
    assert answers(fs, module)[0] == [(1, "unset")]
    path.write_text(LEARNED.replace("VERSION = 1", "VERSION = 22"))  # another size, too
    out, pids = answers(fs, module, count=2)
    assert out == [(22, "unset")] * 2
    assert not importers(log) & set(pids)


def test_a_changed_environ_reimports_a_learned_module(fs, user_module, monkeypatch):
    module, _, _ = user_module
    assert answers(fs, module, count=2)[0] == [(1, "unset")] * 2
    monkeypatch.setenv("MPNB_LEARN_MODE", "fast")
    assert answers(fs, module)[0] == [(1, "fast")]


def test_a_module_that_imports_a_third_party_package_is_left_to_each_child(fs, user_module):
    module, path, log = user_module
    path.write_text("import psutil\n" + LEARNED)
    sys.modules.pop(module.__name__)
    module = __import__(module.__name__)
    out, pids = answers(fs, module, count=2)
    assert out == [(1, "unset")] * 2
    assert set(pids) <= importers(log)  # each child imported it (psutil as it loads)


def test_a_module_that_fails_in_the_server_fails_in_each_child_where_it_is_seen(
    fs, user_module, monkeypatch
):
    module, path, _ = user_module
    path.write_text(
        f"import os\nif os.getpid() != {os.getpid()}:\n    raise RuntimeError('not here')\n"
        + LEARNED
    )
    sys.modules.pop(module.__name__)
    module = __import__(module.__name__)
    for _ in range(2):
        r, w = fs.Pipe(duplex=False)
        p = fs.Process(target=module.answer, args=(w,))
        p.start()
        w.close()
        p.join(WAIT)
        r.close()
        assert p.exitcode == 1  # the child's own import raised, as without a server


def test_a_server_that_dies_as_it_starts_is_a_clear_error_and_nothing_half_started(
    fs, tmp_path, monkeypatch
):
    from mpnb.registry import REGISTRY

    (tmp_path / "mpnb_dies_on_import.py").write_text("import os\nos._exit(3)\n")
    (tmp_path / "mpnb_raises_on_import.py").write_text("raise RuntimeError('no')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    forkserver._forkserver._stop()
    try:
        # A preload that raises is skipped (with a line on stderr): the server runs.
        mpnb.set_forkserver_preload(["__main__", "mpnb_raises_on_import"])
        p = fs.Process(target=exit_with, args=(0,))
        p.start()
        p.join(WAIT)
        assert p.exitcode == 0
        forkserver._forkserver._stop()
        # One that ends the interpreter: start() says so, and nothing is left behind.
        mpnb.set_forkserver_preload(["__main__", "mpnb_dies_on_import"])
        before = len(REGISTRY.snapshot()[0])
        p = fs.Process(target=exit_with, args=(0,), name="never-started")
        with pytest.raises(RuntimeError, match="fork server exited as it started"):
            p.start()
        assert p._popen is None
        assert len(REGISTRY.snapshot()[0]) == before
        assert forkserver._forkserver._forkserver_pid is None
    finally:
        mpnb.set_forkserver_preload(["__main__"])
        forkserver._forkserver._stop()


def sigint_handler(conn) -> None:
    conn.send(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    conn.close()


def test_a_child_gets_the_default_sigint_handler_though_the_server_ignores_it(fs):
    r, w = fs.Pipe(duplex=False)
    p = fs.Process(target=sigint_handler, args=(w,))
    p.start()
    w.close()
    assert r.poll(WAIT) and r.recv() is True
    p.join(WAIT)
    r.close()


def put_many(q, count: int) -> None:
    for i in range(count):
        q.put((i, b"x" * (i % 3) * 3000))


def test_a_child_that_ends_after_filling_its_queue_flushes_it_first(fs):
    # The child exits while its feeder thread still holds items (the pipe is full until
    # the parent reads): multiprocessing's exit handler must run in the child.
    q = fs.Queue()
    p = fs.Process(target=put_many, args=(q, 300))
    p.start()
    try:
        got = [q.get(timeout=WAIT)[0] for _ in range(300)]
        assert got == list(range(300))
    finally:
        p.join(WAIT)
        q.close()
        q.join_thread()
    assert p.exitcode == 0


def register_exit_handler(path: str) -> None:
    import atexit

    atexit.register(lambda: open(path, "w").write("ran"))


def test_a_childs_own_exit_handlers_run(fs, tmp_path):
    marker = tmp_path / "atexit.txt"
    p = fs.Process(target=register_exit_handler, args=(str(marker),))
    p.start()
    p.join(WAIT)
    assert p.exitcode == 0 and marker.read_text() == "ran"

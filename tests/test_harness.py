"""The test machinery itself: the kernel harness and the leak checks."""

from __future__ import annotations

import subprocess
import sys
import time

import leaks
import psutil
import pytest
from kernel_harness import KernelHarness
from shm_audit import sitecustomize as shm_audit

pytestmark = pytest.mark.timeout(60)


@pytest.mark.kernel
def test_execute_collects_stdout_stderr_and_result(module_kernel):
    res = module_kernel.execute("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n6 * 7")
    assert res.status == "ok", res.error
    assert res.stdout == "hello\n"
    assert res.stderr == "oops\n"
    assert res.result == "42"
    assert ("stdout", "hello\n", res.msg_id) in res.streams
    assert res.error is None
    assert module_kernel.evaluate("[1, 'a']") == [1, "a"]


@pytest.mark.kernel
def test_execute_keeps_cell_definitions(module_kernel):
    module_kernel.ensure_ok("def square(x):\n    return x * x")
    assert module_kernel.evaluate("square(7)") == 49


@pytest.mark.kernel
def test_error_is_captured_without_ansi(module_kernel):
    res = module_kernel.execute("def f():\n    return 1 / 0\nf()")
    assert res.status == "error"
    assert res.error.ename == "ZeroDivisionError"
    assert "division by zero" in res.error.evalue
    assert not any("\x1b[" in line for line in res.error.traceback)
    assert "return 1 / 0" in res.error.text
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        module_kernel.ensure_ok("1 / 0")
    assert module_kernel.evaluate("1 + 1") == 2


@pytest.mark.kernel
def test_display_data_is_collected(module_kernel):
    res = module_kernel.ensure_ok("from IPython.display import display\ndisplay('shown')")
    assert [d["data"]["text/plain"] for d in res.displays] == ["'shown'"]


@pytest.mark.kernel
def test_interrupt_stops_a_sleeping_cell_quickly(module_kernel):
    msg_id = module_kernel.submit("import time\ntime.sleep(30)")
    module_kernel.collect_iopub(
        10,
        until=lambda m: (
            m["msg_type"] == "execute_input" and m["parent_header"].get("msg_id") == msg_id
        ),
    )
    time.sleep(0.3)
    t0 = time.monotonic()
    module_kernel.interrupt()
    res = module_kernel.wait(msg_id, timeout=15)
    assert time.monotonic() - t0 < 5
    assert res.status == "error"
    assert res.error.ename == "KeyboardInterrupt"
    assert module_kernel.evaluate("'still alive'") == "still alive"


@pytest.mark.kernel
def test_late_output_from_a_thread_is_collected(module_kernel):
    res = module_kernel.ensure_ok(
        "import threading, time\n"
        "def later():\n"
        "    time.sleep(0.5)\n"
        "    print('late line', flush=True)\n"
        "t = threading.Thread(target=later)\n"
        "t.start()"
    )
    assert "late line" not in res.stdout
    msgs = module_kernel.collect_iopub(
        10, until=lambda m: "late line" in m["content"].get("text", "")
    )
    assert "late line" in KernelHarness.stream_text(msgs, name="stdout")
    module_kernel.ensure_ok("t.join()")


@pytest.mark.kernel
def test_timeout_raises_and_leaves_kernel_usable(module_kernel):
    with pytest.raises(AssertionError, match="did not finish within 1 s"):
        module_kernel.execute("import time\ntime.sleep(20)", timeout=1)
    assert module_kernel.evaluate("3") == 3


@pytest.mark.kernel
def test_children_and_terminal_output(module_kernel):
    module_kernel.ensure_ok(
        "import subprocess, sys, os\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "os.write(1, b'to the terminal\\n')"
    )
    pid = module_kernel.evaluate("p.pid")
    assert pid in {p.pid for p in module_kernel.children()}
    module_kernel.ensure_ok("p.kill(); p.wait()")
    assert pid not in {p.pid for p in module_kernel.children()}
    assert "to the terminal" in module_kernel.terminal_output()


@pytest.mark.kernel
@pytest.mark.slow
def test_close_kills_and_reports_what_the_kernel_left():
    h = KernelHarness.start()
    h.ensure_ok(
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)"
    )
    pid = h.evaluate("p.pid")
    with pytest.raises(AssertionError, match=r"still alive .* after it shut down"):
        h.close(grace=0.5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.kernel
def test_restart_gives_a_new_kernel(kernel):
    old = kernel.kernel_pid
    kernel.ensure_ok("x = 1")
    kernel.restart()
    assert kernel.kernel_pid != old
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    res = kernel.execute("x")
    assert res.error is not None and res.error.ename == "NameError"


@pytest.mark.core
def test_leftover_child_is_found_and_reaped():
    before = leaks.live_descendants()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        new = leaks.live_descendants() - before
        assert p.pid in {q.pid for q in new}
        left = leaks.wait_gone(new, 0.2)
        assert "time.sleep(30)" in leaks.describe(left)
        leaks.reap(left)
        assert p.wait(timeout=5) != 0
    finally:
        p.kill()
        p.wait()


@pytest.mark.core
def test_what_an_older_process_starts_is_its_own():
    code = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(c.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert leaks.descends_from(child, {psutil.Process(parent.pid)})
        assert not leaks.descends_from(child, set())
        assert not leaks.descends_from(psutil.Process(parent.pid), {psutil.Process(parent.pid)})
    finally:
        leaks.reap(
            [psutil.Process(parent.pid)] + psutil.Process(parent.pid).children(recursive=True)
        )
        parent.wait()


@pytest.mark.core
def test_forkserver_is_exempt_but_not_its_workers():
    code = (
        "import multiprocessing as mp, time\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context('forkserver')\n"
        "    w = ctx.Process(target=time.sleep, args=(30,))\n"
        "    w.start()\n"
        "    print(w.pid, flush=True)\n"
        "    time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        tree = leaks.live_descendants(parent.pid)
        pids = {p.pid for p in tree}
        assert worker in pids
        everything = psutil.Process(parent.pid).children(recursive=True)
        assert any("forkserver" in " ".join(p.cmdline()) and p.pid not in pids for p in everything)
    finally:
        procs = [psutil.Process(parent.pid)] + psutil.Process(parent.pid).children(recursive=True)
        leaks.reap(procs)
        parent.wait()


@pytest.mark.core
def test_shm_entries_match_multiprocessing_names(tmp_path):
    for name in ("psm_abc", "sem.mp-x1", "mp-y", "mpnb-z", "unrelated", "sem.other"):
        (tmp_path / name).touch()
    assert leaks.shm_entries(str(tmp_path)) == {"psm_abc", "sem.mp-x1", "mp-y", "mpnb-z"}


OUTSIDER = """
import time
from multiprocessing import shared_memory
seg = shared_memory.SharedMemory(create=True, size=16)
print(seg.name, flush=True)
time.sleep(60)
"""
INSIDER = """
from multiprocessing import shared_memory
seg = shared_memory.SharedMemory(create=True, size=16)
print(seg.name, flush=True)
seg.close()
seg.unlink()
"""


@pytest.mark.core
@pytest.mark.timeout(60)
def test_only_what_the_sessions_processes_created_counts(tmp_path):
    import os

    log = os.environ[shm_audit.ENV]  # set by conftest for the whole session
    clean = {k: v for k, v in os.environ.items() if k not in (shm_audit.ENV, "PYTHONPATH")}
    outsider = subprocess.Popen(
        [sys.executable, "-c", OUTSIDER], env=clean, stdout=subprocess.PIPE, text=True
    )
    try:
        foreign = outsider.stdout.readline().strip().lstrip("/")
        ours = subprocess.run(
            [sys.executable, "-c", INSIDER], capture_output=True, text=True, check=True
        ).stdout.strip()
        created = leaks.session_created(log)
        assert ours.lstrip("/") in created  # a child of the session: logged
        assert foreign and foreign not in created  # another program: never ours
    finally:
        outsider.kill()
        outsider.wait()
        from multiprocessing import shared_memory

        try:
            shared_memory.SharedMemory(foreign).unlink()
        except (FileNotFoundError, ValueError):
            pass

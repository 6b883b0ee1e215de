"""Children's output in a real kernel: the right cell, the right stream, whole lines.

Each test runs cells through jupyter_client and asserts on the IOPub ``stream``
messages: their parent header (the cell that started the work), their stream name,
whole lines, the order of each process's lines, and tracebacks that show the cell's
source line. No assertion is about time: children wait on events the cells set.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from kernel_harness import TAG, messages_with, parent_of, streams, untagged

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

SETUP = """
import logging, os, sys, time
import mpnb as mp

def work(tag):
    print("hello from", tag)
    sys.stdout.write("part one, ")
    sys.stdout.write("part two\\n")
    print("to stderr", tag, file=sys.stderr)
    logging.warning("a warning from %s", tag)
    os.write(1, b"raw fd 1\\n")
    os.write(2, b"raw fd 2\\n")
    os.system("echo from a shell; echo shell error >&2")

def chatter(k, n):
    for i in range(n):
        sys.stdout.write(f"P{k} ")
        sys.stdout.write(f"{i:04d} ")
        sys.stdout.write("x" * 40 + "\\n")
        if i % 50 == 0:
            print(f"P{k} {i:04d} err", file=sys.stderr)

def late(ev):
    print("child is running")
    sys.stdout.write("waiting...")
    ev.wait(120)
    print(" released")
    print("late error line", file=sys.stderr)
"""

BOOM = """def boom():
    x = 1
    raise ValueError("boom in child")
"""


def _pool_routes_tasks() -> bool:
    """Whether mpnb's pool captures each task's route where it is submitted and enters it
    in the worker; until it does, a task writes into the cell that made the pool."""
    import mpnb

    root = pathlib.Path(mpnb.__file__).parent
    sources = [
        path.read_text()
        for path in root.rglob("*.py")
        if path.name not in ("_routing.py", "process.py") and root / "output" not in path.parents
    ]
    return all(
        any(f"_routing.{call}(" in text for text in sources) for call in ("capture", "enter")
    )


@pytest.fixture(scope="module")
def nb(module_kernel):
    module_kernel.ensure_ok(SETUP)
    assert module_kernel.evaluate("mp.output.active()") is True
    return module_kernel


# -- processes --------------------------------------------------------------------------


def test_every_way_of_writing_lands_in_the_cell(nb, start_method):
    res = nb.ensure_ok(
        f"p = mp.get_context({start_method!r}).Process(target=work, args=({start_method!r},))\n"
        "p.start(); p.join()\n"
        "print('after join', p.exitcode)"
    )
    out, err = untagged(res.stdout), untagged(res.stderr)
    assert out == [
        f"hello from {start_method}",
        "part one, part two",
        "raw fd 1",
        "from a shell",
        "after join 0",
    ]
    assert sorted(err) == sorted(
        [
            f"to stderr {start_method}",
            f"WARNING:root:a warning from {start_method}",
            "raw fd 2",
            "shell error",
        ]
    )
    # Every stream message of the run belongs to this cell.
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    # Nothing went to the terminal that runs the kernel.
    assert f"hello from {start_method}" not in nb.terminal_output()


def test_logging_configured_in_the_kernel_writes_once_into_the_cell(nb, start_method):
    nb.ensure_ok(
        "cell_log = logging.getLogger('from_the_kernel')\n"
        "if not cell_log.handlers:\n"
        "    cell_log.addHandler(logging.StreamHandler())  # on the kernel's sys.stderr\n"
        "cell_log.propagate = False"
    )
    res = nb.ensure_ok(
        f"p = mp.get_context({start_method!r}).Process(target=lambda: "
        "logging.getLogger('from_the_kernel').error('logged in the child'))\n"
        "p.start(); p.join()"
    )
    # A forked child has the kernel's handler, pointed at its new stderr; a fresh
    # interpreter has none and uses logging's last resort, on stderr too.
    assert res.stderr == "logged in the child\n"
    assert res.stdout == ""
    assert {parent for _, _, parent in res.streams} == {res.msg_id}


def test_output_after_the_cell_finished_goes_to_that_cell(nb):
    first = nb.ensure_ok(
        "ev = mp.Event()\np_late = mp.Process(target=late, args=(ev,))\np_late.start()"
    )
    # Without a newline nor a flush, the line shows while the child still waits.
    seen = list(first.messages)
    if not messages_with(seen, "waiting..."):
        seen += nb.collect_iopub(60, until=lambda m: "waiting..." in m["content"].get("text", ""))
    for needle in ("child is running", "waiting..."):
        found = messages_with(seen, needle)
        assert found and all(parent_of(m) == first.msg_id for m in found), needle
    # Another cell runs while the child prints its last lines.
    second = nb.ensure_ok(
        "ev.set()\n"
        "deadline = time.monotonic() + 60\n"
        "while p_late.is_alive() and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('second cell done')"
    )
    late_msgs = second.messages + nb.collect_iopub(
        30, until=lambda m: "late error line" in m["content"].get("text", "")
    )
    for needle in (" released", "late error line"):
        found = messages_with(late_msgs, needle)
        assert found, f"{needle!r} never published"
        assert all(parent_of(m) == first.msg_id for m in found)
    assert messages_with(late_msgs, "late error line")[0]["content"]["name"] == "stderr"
    assert second.stdout == "second cell done\n"
    assert second.stderr == ""
    nb.ensure_ok("p_late.join()")


def test_concurrent_processes_write_whole_tagged_lines(nb):
    n = 300
    res = nb.ensure_ok(
        f"ps = [mp.Process(target=chatter, args=(k, {n})) for k in range(3)]\n"
        "for p in ps: p.start()\n"
        "for p in ps: p.join()\n"
        "names = [p.name for p in ps]"
    )
    names = nb.evaluate("names")
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    source = None
    tagged = set()
    for line in res.stdout.splitlines():
        tag = TAG.match(line)
        if tag:
            assert tag.group(1) == "stdout"
            source = names.index(tag.group(2))
            tagged.add(source)
            line = line[tag.end() :]
        match = re.fullmatch(r"P(\d) (\d{4}) x{40}", line)
        assert match, f"not a whole line: {line!r}"
        k = int(match.group(1))
        if source is None:
            source = k  # the first writer is untagged until a second one writes
        assert k == source, f"line of P{k} under the tag of P{source}"
        seen[k].append(int(match.group(2)))
    assert all(seen[k] == list(range(n)) for k in seen), "lost or reordered lines"
    assert len(tagged) >= 2
    err = untagged(res.stderr)
    for k in range(3):
        assert [line for line in err if line.startswith(f"P{k}")] == [
            f"P{k} {i:04d} err" for i in range(0, n, 50)
        ]


def test_tags_can_be_switched_off(nb):
    try:
        res = nb.ensure_ok(
            "mp.output.configure(tags=False)\n"
            "ps = [mp.Process(target=chatter, args=(k, 100)) for k in range(2)]\n"
            "for p in ps: p.start()\n"
            "for p in ps: p.join()"
        )
    finally:
        nb.ensure_ok("mp.output.configure(tags=True)")
    assert "[stdout:" not in res.stdout and "[stderr:" not in res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 200
    assert all(re.fullmatch(r"P\d \d{4} x{40}", line) for line in lines)


@pytest.mark.parametrize(
    "outer,inner", [("spawn", "forkserver"), ("forkserver", "fork"), ("fork", "spawn")]
)
def test_grandchildren_write_into_the_same_cell(nb, outer, inner):
    res = nb.ensure_ok(
        "def grandchild(tag):\n"
        "    print('grandchild says', tag)\n"
        "    os.write(2, b'grandchild fd 2\\n')\n"
        "def child(method):\n"
        "    print('child starts')\n"
        "    g = mp.get_context(method).Process(target=grandchild, args=(method,))\n"
        "    g.start(); g.join()\n"
        "    print('child ends', g.exitcode)\n"
        f"p = mp.get_context({outer!r}).Process(target=child, args=({inner!r},))\n"
        "p.start(); p.join()"
    )
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    out = untagged(res.stdout)
    assert sorted(out) == sorted(["child starts", f"grandchild says {inner}", "child ends 0"])
    assert out.index("child starts") < out.index("child ends 0")
    assert untagged(res.stderr) == ["grandchild fd 2"]


def test_a_pool_in_a_child_writes_into_the_cell(nb):
    res = nb.ensure_ok(
        "def square_noisily(x):\n"
        "    print('square of', x)\n"
        "    return x * x\n"
        "def pool_child():\n"
        "    with mp.Pool(2) as pool:\n"
        "        print('child got', pool.map(square_noisily, range(4)))\n"
        "p = mp.Process(target=pool_child)\n"
        "p.start(); p.join()"
    )
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    out = untagged(res.stdout)
    assert sorted(line for line in out if line.startswith("square of")) == [
        f"square of {i}" for i in range(4)
    ]
    assert "child got [0, 1, 4, 9]" in out


def test_a_raising_target_prints_one_traceback_in_its_cell(nb, start_method):
    definition = nb.ensure_ok(BOOM)
    res = nb.ensure_ok(
        f"p = mp.get_context({start_method!r}).Process(target=boom)\n"
        "p.start(); p.join()\n"
        "print('exitcode', p.exitcode)"
    )
    assert res.stdout == "exitcode 1\n"
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    err = res.stderr
    assert err.count("Traceback (most recent call last)") == 1
    assert err.count("ValueError: boom in child") == 1
    assert f"Cell In[{definition.execution_count}], line 3, in boom" in err
    assert err.count('raise ValueError("boom in child")') == 1
    assert err.index("line 3, in boom") < err.index('raise ValueError("boom in child")')
    assert "boom in child" not in nb.terminal_output()


def test_unload_ext_turns_routing_off_and_load_ext_on(nb):
    try:
        assert nb.evaluate("%load_ext mpnb\nmp.output.active()") is True
        off = nb.ensure_ok(
            "%unload_ext mpnb\n"
            "p = mp.Process(target=print, args=('unrouted',)); p.start(); p.join()\n"
            "print(mp.output.active())"
        )
        assert off.stdout.endswith("False\n")
    finally:
        nb.ensure_ok("%load_ext mpnb")
    on = nb.ensure_ok(
        "p = mp.Process(target=print, args=('routed again',)); p.start(); p.join()\n"
        "print(mp.output.active())"
    )
    assert on.stdout == "routed again\nTrue\n"
    assert {parent for _, _, parent in on.streams} == {on.msg_id}


# -- pools ------------------------------------------------------------------------------

NOISY = """
def noisy(x):
    print(f"task {x} says hello")
    print(f"task {x} complains", file=sys.stderr)
    return x * x
"""


def test_pool_task_output_comes_before_the_result(nb):
    nb.ensure_ok(NOISY)
    res = nb.ensure_ok("with mp.Pool(2) as pool:\n    squares = pool.map(noisy, range(6))\nsquares")
    assert res.result == "[0, 1, 4, 9, 16, 25]"
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    assert sorted(untagged(res.stdout)) == sorted(f"task {x} says hello" for x in range(6))
    assert sorted(untagged(res.stderr)) == sorted(f"task {x} complains" for x in range(6))
    kinds = [m["msg_type"] for m in res.messages if m["msg_type"] in ("stream", "execute_result")]
    assert kinds[-1] == "execute_result", "task output arrived after the result"


@pytest.mark.xfail(
    not _pool_routes_tasks(), strict=False, reason="mpnb.Pool does not enter each task's route yet"
)
def test_pool_tasks_write_into_the_cell_that_submitted_them(nb):
    nb.ensure_ok(NOISY)
    created = nb.ensure_ok("pool = mp.Pool(2)")
    try:
        res = nb.ensure_ok("pool.map(noisy, range(4))")
        later = nb.collect_iopub(2)
    finally:
        nb.ensure_ok("pool.close(); pool.join()")
    assert sorted(untagged(res.stdout)) == sorted(f"task {x} says hello" for x in range(4))
    misplaced = [
        m
        for m in streams(later) + streams(res.messages)
        if "task" in m["content"]["text"] and parent_of(m) != res.msg_id
    ]
    assert not misplaced, f"task output in another cell (pool made in {created.msg_id})"


def test_kernel_and_child_lines_keep_their_order(kernel):
    res = kernel.ensure_ok(
        "import mpnb as mp, time\n"
        "def child():\n"
        "    time.sleep(0.05)\n"
        "    print('child: second')\n"
        "p = mp.Process(target=child)\n"
        "p.start()\n"
        "print('kernel: first')\n"
        "time.sleep(1.0)\n"
        "print('kernel: third')\n"
        "p.join()\n",
        timeout=120,
    )
    order = [line for line in res.stdout.splitlines() if line]
    assert order == ["kernel: first", "child: second", "kernel: third"], res.stdout


HALF_LINES = """
import sys
import mpnb as mp
import mpnb.output.kernel as _kernel_side

def says(go, done):
    go.wait(60)
    print("Worker process running...")
    done.set()

# The mechanism decides here, not the machine's load: wait as long as it takes.
_kernel_side.UNFINISHED_LINE_WAIT = 60
try:
    for i in range(8):
        go, done = mp.Event(), mp.Event()
        p = mp.Process(target=says, args=(go, done))
        p.start()
        sys.stdout.write(f"STATE {i} = ")  # half a line, as print writes it
        go.set()
        done.wait(60)  # the child's line is written while the kernel's is unfinished
        sys.stdout.write("'running'")
        sys.stdout.write("\\n")
        p.join()
finally:
    _kernel_side.UNFINISHED_LINE_WAIT = 0.5
"""


def test_a_child_line_never_lands_inside_a_kernel_line(kernel):
    res = kernel.ensure_ok(HALF_LINES, timeout=240)
    lines = [line for line in untagged(res.stdout) if line]
    expected = []
    for i in range(8):
        expected += [f"STATE {i} = 'running'", "Worker process running..."]
    assert lines == expected, res.stdout


def test_a_kernel_line_never_finished_holds_a_child_line_only_a_while(kernel):
    res = kernel.ensure_ok(
        "import sys, mpnb as mp\n"
        "sys.stdout.write('no newline yet ')\n"
        "p = mp.Process(target=print, args=('child line',))\n"
        "p.start()\n"
        "p.join()\n"
        "print('end')\n",
        timeout=120,
    )
    assert "child line" in res.stdout and res.stdout.endswith("end\n"), res.stdout

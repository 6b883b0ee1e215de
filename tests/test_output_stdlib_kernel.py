"""After ``%load_ext mpnb``, the standard library's children write into their cells too.

A real kernel, every start method: ``multiprocessing.Process``, ``multiprocessing.Pool``
and ``concurrent.futures.ProcessPoolExecutor`` write into the cell that started the
process or submitted the task (also after that cell finished, and after ``with Pool()``
terminated the workers), stdout and stderr apart, whole lines, tagged as mpnb's own
children are. ``%unload_ext mpnb`` leaves no attribute of the standard library patched.
No assertion is about time: tasks wait for a file that a later cell creates.
"""

from __future__ import annotations

import pytest
from kernel_harness import messages_with, parent_of, streams, untagged

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

SETUP = """
%load_ext mpnb
import concurrent.futures, multiprocessing, os, sys, tempfile, time

def noisy(x):
    print(f"task {x} says hello")
    sys.stdout.write(f"task {x} ")
    sys.stdout.write("in parts\\n")
    print(f"task {x} complains", file=sys.stderr)
    return x * x

def wait_for(path, tag):
    deadline = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(f"{tag} released")
    os.write(1, f"{tag} raw fd 1\\n".encode())
    print(f"{tag} error line", file=sys.stderr)
    return tag

def new_path():
    fd, path = tempfile.mkstemp(prefix="mpnb-release-")
    os.close(fd)
    os.unlink(path)
    return path
"""

# Every attribute of the classes ``%load_ext mpnb`` may patch, by identity.
ATTRIBUTES = """
def stdlib_attributes():
    import multiprocessing.process as mpp, multiprocessing.pool as mpl
    import multiprocessing.reduction as red
    import concurrent.futures.process as cfp, concurrent.futures._base as cfb
    owners = [mpp.BaseProcess, mpl.Pool, mpl.ApplyResult, mpl.MapResult, mpl.IMapIterator,
              mpl.ThreadPool, cfp.ProcessPoolExecutor, cfp._ExecutorManagerThread,
              cfb.Future, red.ForkingPickler]
    found = {f"{o.__module__}.{o.__qualname__}.{n}": id(v)
             for o in owners for n, v in vars(o).items()}
    found.update({f"{m.__name__}.{n}": id(v) for m in (mpp, mpl, red, cfp)
                  for n, v in vars(m).items() if callable(v)})
    return found
"""


@pytest.fixture(scope="module")
def nb(module_kernel):
    module_kernel.ensure_ok(SETUP)
    return module_kernel


def noisy_lines(items: range) -> tuple[list[str], list[str]]:
    out = [f"task {x} {what}" for x in items for what in ("says hello", "in parts")]
    return sorted(out), sorted(f"task {x} complains" for x in items)


def test_pool_output_lands_in_its_cell_after_with_pool_exits(nb, start_method):
    res = nb.ensure_ok(
        f"with multiprocessing.get_context({start_method!r}).Pool(2) as pool:\n"
        "    squares = pool.map(noisy, range(4))\n"
        "    one = pool.apply(noisy, (4,))\n"
        "    more = list(pool.imap(noisy, range(5, 7), chunksize=2))\n"
        "    unordered = sorted(pool.imap_unordered(noisy, range(7, 9)))\n"
        "    try:\n"
        "        pool.apply(divmod, (1, 0))\n"
        "    except ZeroDivisionError as exc:\n"
        "        caught = type(exc).__name__\n"
        "print('after the pool', squares, one, more, unordered, caught)",
        timeout=120,
    )
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    out, err = untagged(res.stdout), untagged(res.stderr)
    assert out[-1] == "after the pool [0, 1, 4, 9] 16 [25, 36] [49, 64] ZeroDivisionError"
    assert (sorted(out[:-1]), sorted(err)) == noisy_lines(range(9))
    # Whole lines, and nothing went to the terminal that runs the kernel.
    assert "task 3 says hello" not in nb.terminal_output()


@pytest.mark.parametrize("kind", ["pool", "executor"])
def test_a_task_writes_into_the_cell_that_submitted_it(nb, start_method, kind):
    if kind == "pool":
        make = f"runner = multiprocessing.get_context({start_method!r}).Pool(2)"
        submit, get, stop = "runner.apply_async", ".get(120)", "runner.close(); runner.join()"
    else:
        make = (
            "runner = concurrent.futures.ProcessPoolExecutor(2, mp_context="
            f"multiprocessing.get_context({start_method!r}))"
        )
        submit, get, stop = "runner.submit", ".result(120)", "runner.shutdown()"
    created = nb.ensure_ok(f"{make}\npath = new_path()")
    try:
        if kind == "pool":
            first = nb.ensure_ok(f"r_a = {submit}(wait_for, (path, 'A'))")
        else:
            first = nb.ensure_ok(f"r_a = {submit}(wait_for, path, 'A')")
        second = nb.ensure_ok(
            f"print({submit}(noisy, {'(1,)' if kind == 'pool' else '1'}){get})\n"
            "open(path, 'w').close()\n"
            f"print('A gave', r_a{get})",
            timeout=150,
        )
    finally:
        nb.ensure_ok(f"{stop}\nos.unlink(path) if os.path.exists(path) else None", timeout=120)
    # Published before r_a's result came back, while the second cell ran, into the first.
    for needle in ("A released", "A raw fd 1", "A error line"):
        found = messages_with(second.messages, needle)
        assert found and all(parent_of(m) == first.msg_id for m in found), needle
    assert messages_with(second.messages, "A error line")[0]["content"]["name"] == "stderr"
    out, err = untagged(second.stdout), untagged(second.stderr)
    assert out[-2:] == ["1", "A gave A"], second.stdout
    assert (sorted(out[:-2]), err) == (noisy_lines(range(1, 2))[0], ["task 1 complains"])
    assert first.stdout == first.stderr == ""
    assert not [
        m for m in streams(first.messages + second.messages) if parent_of(m) == created.msg_id
    ]


def test_a_process_writes_into_its_cell_also_after_it_finished(nb, start_method):
    first = nb.ensure_ok(
        "path = new_path()\n"
        f"proc = multiprocessing.get_context({start_method!r}).Process(\n"
        "    target=wait_for, args=(path, 'P'))\n"
        "proc.start()\n"
        "print('started')"
    )
    second = nb.ensure_ok(
        "open(path, 'w').close()\nproc.join(120)\nos.unlink(path)\nprint('joined', proc.exitcode)",
        timeout=150,
    )
    assert first.stdout == "started\n"
    for needle in ("P released", "P raw fd 1", "P error line"):
        found = messages_with(second.messages, needle)
        assert found and all(parent_of(m) == first.msg_id for m in found), needle
    # join() returned once the process's output was published.
    assert second.stdout == "joined 0\n" and second.stderr == ""
    out = [m["content"]["text"] for m in streams(second.messages)]
    assert out.index("joined 0\n") == len(out) - 1
    # A process in the cell that joins it: its lines, then what follows.
    res = nb.ensure_ok(
        f"proc = multiprocessing.get_context({start_method!r}).Process(target=noisy, args=(0,))\n"
        "proc.start(); proc.join(120)\n"
        "print('exit code', proc.exitcode)",
        timeout=150,
    )
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    out, err = untagged(res.stdout), untagged(res.stderr)
    assert out == ["task 0 says hello", "task 0 in parts", "exit code 0"]
    assert err == ["task 0 complains"]


def test_executor_output_lands_in_its_cell(nb, start_method):
    res = nb.ensure_ok(
        "with concurrent.futures.ProcessPoolExecutor(\n"
        f"        2, mp_context=multiprocessing.get_context({start_method!r})) as ex:\n"
        "    squares = list(ex.map(noisy, range(4)))\n"
        "    chunked = list(ex.map(noisy, range(4, 8), chunksize=2))\n"
        "    last = ex.submit(noisy, 8).result()\n"
        "print('after the executor', squares, chunked, last)",
        timeout=120,
    )
    assert {parent for _, _, parent in res.streams} == {res.msg_id}
    out, err = untagged(res.stdout), untagged(res.stderr)
    assert out[-1] == "after the executor [0, 1, 4, 9] [16, 25, 36, 49] 64", res.stdout
    assert (sorted(out[:-1]), sorted(err)) == noisy_lines(range(9))


def test_a_thread_pool_is_left_as_it_is(nb):
    res = nb.ensure_ok(
        "from multiprocessing.pool import ThreadPool\n"
        "with ThreadPool(2) as tp:\n"
        "    got = tp.map(lambda f: type(f).__name__, [noisy])\n"
        "got"
    )
    assert res.result == "['function']"


def test_unload_ext_leaves_nothing_patched(kernel):
    kernel.ensure_ok(ATTRIBUTES + "\nimport multiprocessing, sys\nbefore = stdlib_attributes()")
    kernel.ensure_ok("%load_ext mpnb\nimport mpnb.output.stdlib")
    changed = kernel.evaluate(
        "sorted(k for k, v in stdlib_attributes().items() if before.get(k) != v)"
    )
    assert "multiprocessing.process.BaseProcess.start" in changed
    assert "multiprocessing.pool.Pool.apply_async" in changed
    assert "concurrent.futures.process.ProcessPoolExecutor.submit" in changed
    kernel.ensure_ok(
        "p = multiprocessing.get_context('fork').Process(target=print, args=('routed',))\n"
        "p.start(); p.join()\n"
        "assert '_mpnb_stdlib_setups' in vars(p), vars(p)"
    )
    kernel.ensure_ok("%unload_ext mpnb")
    assert kernel.evaluate("mpnb.output.stdlib.patched()") == []
    assert (
        kernel.evaluate(
            "sorted(k for k in set(before) | set(stdlib_attributes()) "
            "if before.get(k) != stdlib_attributes().get(k))"
        )
        == []
    )
    # Plain behaviour again: nothing rides with a process, a pool worker calls the
    # function itself, the pool reads its results as it did.
    kernel.ensure_ok(
        "def caller():\n"
        "    return sys._getframe(1).f_code.co_name\n"
        "for method in ('fork', 'spawn'):\n"
        "    p = multiprocessing.get_context(method).Process(target=sys.exit, args=(3,))\n"
        "    p.start(); p.join(60)\n"
        "    assert p.exitcode == 3 and '_mpnb_stdlib_setups' not in vars(p), vars(p)\n"
        "with multiprocessing.get_context('fork').Pool(1) as pool:\n"
        "    assert pool.apply(caller) == 'worker'\n"
        "    assert pool._quick_get.__name__ == 'recv', pool._quick_get",
        timeout=120,
    )


def test_items_of_chunks_is_an_imap_iterator():
    """A routed, chunked stdlib ``imap`` hands out items with ``next(timeout)`` as
    ``IMapIterator`` does, and ends where its chunks end."""
    from multiprocessing.pool import ThreadPool

    from mpnb.output.stdlib import _ItemsOfChunks

    with ThreadPool(1) as pool:
        items = _ItemsOfChunks(pool.imap(list, [[1, 2], [], [3]]))
        assert items.next(timeout=10) == 1
        assert list(items) == [2, 3]
        with pytest.raises(StopIteration):
            items.next(timeout=10)

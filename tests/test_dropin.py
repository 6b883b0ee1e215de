"""What code written for the standard library's ``multiprocessing`` finds in mpnb: every
module, name and exception type, the start method a child reports, and the stdlib's
behaviour where a test of CPython's own suite pins it."""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.pool
import subprocess
import sys

import pytest
from cells import cell

import mpnb

pytestmark = [pytest.mark.core, pytest.mark.timeout(90)]

CODE = """
def report_method(conn):
    import mpnb
    conn.send(mpnb.get_start_method())
    conn.close()
"""


@pytest.mark.parametrize("name", sorted(mpnb._aliases.STDLIB_SUBMODULES))
def test_stdlib_submodules_import_under_mpnbs_name(name):
    try:
        stdlib = importlib.import_module(f"multiprocessing.{name}")
    except ImportError:
        with pytest.raises(ImportError):
            importlib.import_module(f"mpnb.{name}")
        return
    module = importlib.import_module(f"mpnb.{name}")
    assert module is stdlib
    assert module.__spec__.name == f"multiprocessing.{name}"  # its own spec, kept
    assert getattr(mpnb, name) is stdlib


def test_import_statements_of_the_stdlib_work_after_the_rename():
    code = (
        "import mpnb.util, mpnb.resource_tracker, mpnb.forkserver\n"
        "from mpnb import heap, synchronize, reduction\n"
        "from mpnb.connection import families, BUFSIZE, Listener\n"
        "from mpnb.shared_memory import _SHM_NAME_PREFIX\n"
        "from mpnb.managers import RemoteError\n"
        "from mpnb.dummy import Value, Array, connection\n"
        "from mpnb.pool import MaybeEncodingError, RemoteTraceback, ThreadPool\n"
        "from mpnb.queues import Empty, Full\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_an_unknown_name_still_raises_attribute_error():
    import mpnb.connection

    with pytest.raises(AttributeError, match="no_such_name"):
        mpnb.connection.no_such_name


def test_the_default_context_has_a_repr_and_reading_it_fixes_nothing():
    before = mpnb.get_start_method(allow_none=True)
    assert "mpnb context" in repr(mpnb.Pool)
    assert mpnb.get_start_method(allow_none=True) == before


def _method_a_child_reports(ctx) -> str:
    """What ``mpnb.get_start_method()`` says in a child started by ``ctx``."""
    reader, writer = ctx.Pipe(duplex=False)
    p = ctx.Process(target=cell(CODE).report_method, args=(writer,))
    p.start()
    writer.close()
    try:
        return str(reader.recv())
    finally:
        p.join()
        reader.close()


def test_a_child_reports_the_start_method_that_started_it(start_method):
    assert _method_a_child_reports(mpnb.get_context(start_method)) == start_method


def test_the_default_process_reports_mpnbs_default_method(start_method):
    before = mpnb.get_start_method(allow_none=True)
    try:
        mpnb.set_start_method(start_method, force=True)
        assert _method_a_child_reports(mpnb) == start_method
    finally:
        mpnb.set_start_method(before, force=True)


def _add_under_lock(value, array):
    with value.get_lock():
        value.value += 1
    with array.get_lock():
        array[0] += 1


def test_sharedctypes_locks_go_to_mpnb_children(start_method):
    """``mpnb.sharedctypes`` takes mpnb's context, not the stdlib's default (fork)."""
    from mpnb import sharedctypes

    before = mpnb.get_start_method(allow_none=True)
    try:
        mpnb.set_start_method(start_method, force=True)
        value, array = sharedctypes.Value("i", 1), sharedctypes.Array("d", [1.0, 2.0])
        p = mpnb.Process(target=_add_under_lock, args=(value, array))
        p.start()
        p.join()
        assert p.exitcode == 0
        assert (value.value, array[0]) == (2, 2.0)
    finally:
        mpnb.set_start_method(before, force=True)


def _returns_a_generator():
    return (i for i in range(3))


def _raises():
    raise RuntimeError(123)  # the comment stays


def test_stdlib_exception_types_are_what_mpnb_raises(ctx):
    with ctx.Pool(1) as pool:
        seen = []
        result = pool.apply_async(_returns_a_generator, error_callback=seen.append)
        with pytest.raises(multiprocessing.pool.MaybeEncodingError) as info:
            result.get(timeout=30)
        assert isinstance(info.value, mpnb.TaskSerializationError)
        assert "generator" in info.value.exc and info.value.value
        assert "generator" in str(info.value)  # mpnb's message, not the stdlib's format
        assert seen == [info.value]
        with pytest.raises(RuntimeError) as info:
            pool.apply(_raises)
        cause = info.value.__cause__
        assert type(cause) is mpnb.pool.RemoteTraceback
        assert "raise RuntimeError(123)  # the comment stays" in cause.tb
        assert pool.map(abs, [-1, -2]) == [1, 2]  # still a working pool


class _Boom(Exception):
    pass


def _items_then_error(total, when):
    for i in range(total):
        if i == when:
            raise _Boom(i)
        yield i


@pytest.mark.parametrize("when, chunksize, results", [(0, 1, 0), (3, 1, 3), (7, 2, 6), (7, 4, 4)])
def test_imap_drops_the_chunk_the_iterable_spoiled(ctx, when, chunksize, results):
    """As the standard library: the results before that chunk, then the iterable's error."""
    with ctx.Pool(2) as pool:
        it = pool.imap(abs, _items_then_error(20, when), chunksize)
        got = []
        with pytest.raises(_Boom):
            while True:
                got.append(next(it))
        assert got == list(range(results))


# -- what Python 3.14 adds, on every supported Python ------------------------------------


def _sleep_until_interrupted(conn):
    import time

    try:
        conn.send("ready")
        time.sleep(60)
    except KeyboardInterrupt:
        raise SystemExit(7) from None


def test_process_interrupt_raises_keyboard_interrupt_in_the_child(ctx):
    reader, writer = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_sleep_until_interrupted, args=(writer,))
    with pytest.raises(ValueError, match="not started"):
        p.interrupt()
    p.start()
    assert reader.recv() == "ready"
    p.interrupt()
    p.join(30)
    assert p.exitcode == 7
    p.interrupt()  # an ended process: nothing to do, no error


def test_manager_set_list_and_dict_additions():
    with mpnb.Manager() as manager:
        s = manager.set([1, 2])
        s.add(3)
        s |= {4}
        s -= {1}
        assert sorted(s) == [2, 3, 4] and 3 in s and len(s) == 3
        assert s & {2, 9} == {2} and s.union({7}) == {2, 3, 4, 7}
        items = manager.list([1, 2])
        assert items.copy() == [1, 2]
        items.clear()
        assert list(items) == []
        d = manager.dict(a=1)
        assert d | {"b": 2} == {"a": 1, "b": 2}
        assert {"z": 0} | d == {"z": 0, "a": 1}
        d |= {"c": 3}
        assert list(reversed(d)) == ["c", "a"]


_started: list = []


def _failing_third(method):
    """A process class of ``method`` whose third instance fails to start."""

    class FailingThird(mpnb.get_context(method).Process):
        def start(self):
            if len(_started) == 2:
                raise OSError("Manually induced OSError")
            super().start()
            _started.append(self)

    FailingThird.__qualname__ = FailingThird.__name__ = f"FailingThird_{method}"
    return FailingThird


# At module level, so that a child finds the class by name.
globals().update((f"FailingThird_{m}", _failing_third(m)) for m in mpnb.get_all_start_methods())


def test_a_pool_whose_worker_cannot_start_leaves_no_worker_behind(ctx, start_method):
    """CPython's ``test_release_unused_processes``, with real processes."""
    context = type(
        "FailingContext", (type(ctx),), {"Process": globals()[f"FailingThird_{start_method}"]}
    )()
    _started.clear()
    with pytest.raises(OSError, match="Manually induced"):
        mpnb.pool.Pool(5, context=context)
    assert len(_started) == 2
    for process in _started:
        process.join(10)
        assert not process.is_alive()
    _started.clear()


def test_an_unclosed_running_pool_warns_and_stops_when_collected(ctx):
    """CPython's ``test_resource_warning``, without reaching into ``_state``."""
    import gc

    pool = ctx.Pool(1)
    assert pool.apply(abs, (-1,)) == 1
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
        gc.collect()
    # (the fixtures check that its worker is gone)


def test_workers_are_replaced_after_maxtasksperchild(ctx):
    """CPython's ``test_pool_worker_lifetime``, without calling ``_repopulate_pool``."""
    with ctx.Pool(3, maxtasksperchild=10) as pool:
        first = {w.pid for w in pool._pool}
        assert pool.map(abs, range(-100, 0), chunksize=1) == list(range(100, 0, -1))
        pids = set(pool.map(_pid, range(30), chunksize=1))
        assert None not in {w.pid for w in pool._pool}
        assert not pids & first and all(isinstance(p, int) for p in pids)


def _pid(_):
    import os

    return os.getpid()

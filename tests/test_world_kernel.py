"""Children start from the notebook's world as it is now (``mpnb._world``), in a real
kernel: ``os.environ``, the working directory and ``sys.path`` changed between cells,
helper modules edited and reloaded (``importlib.reload``, ``%autoreload``), and the
kernel's logging set-up; for a new ``Process``, a new ``Pool``, a warm ``Pool`` and the
warm ``%%mp_pool`` pool, under forkserver and spawn (fork copies the world itself)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

METHODS = ["forkserver", "spawn"]

SETUP = """
%load_ext mpnb
import importlib, logging, os, sys, tempfile, time
import mpnb as mp
home = tempfile.mkdtemp(prefix="mpnb-world-")
os.chdir(home)
sys.path.insert(0, home)

def write_helper(version):
    with open(os.path.join(home, "helper_mod.py"), "w") as f:
        f.write(f"VERSION = {version!r}\\ndef version(_=None):\\n    return VERSION\\n")
    time.sleep(0.01)  # a new mtime even on coarse clocks

def in_process(ctx, func):
    q = ctx.Queue()
    p = ctx.Process(target=lambda q: q.put(func()), args=(q,))
    p.start()
    value = q.get(timeout=60)
    p.join()
    return value

write_helper("v1")
import helper_mod
"""


@pytest.fixture(scope="module")
def k(module_kernel):
    module_kernel.ensure_ok(SETUP)
    yield module_kernel
    module_kernel.ensure_ok("%mp_pool --shutdown\nos.chdir(home)")


def _mp_pool(k, method: str, body: str) -> list:
    k.ensure_ok(f"%%mp_pool --no-progress --start-method {method} -n 1 -o r for x in [0]\n{body}")
    return k.evaluate("r")


@pytest.mark.parametrize("method", METHODS)
def test_environ_reaches_process_pool_and_warm_pool(k, method):
    _mp_pool(k, method, "x")  # the warm pool and the fork server exist before the change
    k.ensure_ok(f"ctx = mp.get_context({method!r})\nwith ctx.Pool(1) as p: p.apply(abs, (1,))")
    k.ensure_ok(f"os.environ['MPNB_WORLD'] = 'set-{method}'\nos.environ.pop('MPNB_GONE', None)")
    want = f"set-{method}"
    assert k.evaluate("in_process(ctx, lambda: os.environ.get('MPNB_WORLD'))") == want
    got = k.evaluate("with ctx.Pool(1) as p: v = p.apply(os.environ.get, ('MPNB_WORLD',))\nv")
    assert got == want
    assert _mp_pool(k, method, "os.environ.get('MPNB_WORLD')") == [want]
    k.ensure_ok("del os.environ['MPNB_WORLD']")
    assert _mp_pool(k, method, "os.environ.get('MPNB_WORLD')") == [None]
    assert k.evaluate("in_process(ctx, lambda: os.environ.get('MPNB_WORLD')) is None")


@pytest.mark.parametrize("method", METHODS)
def test_chdir_and_sys_path_reach_the_warm_pool(k, method):
    k.ensure_ok(
        "os.makedirs(os.path.join(home, 'sub'), exist_ok=True)\n"
        "open(os.path.join(home, 'sub', 'data.txt'), 'w').write('data here')\n"
        "extra = os.path.join(home, 'extra')\nos.makedirs(extra, exist_ok=True)\n"
        "open(os.path.join(extra, 'extra_mod.py'), 'w').write('V = 42\\n')"
    )
    _mp_pool(k, method, "x")
    k.ensure_ok("os.chdir(os.path.join(home, 'sub'))\nsys.path.append(extra)")
    try:
        body = "import extra_mod\n(open('data.txt').read(), extra_mod.V)"
        assert _mp_pool(k, method, body) == [("data here", 42)]
        got = k.evaluate(
            f"in_process(mp.get_context({method!r}), lambda: (open('data.txt').read(), "
            "__import__('extra_mod').V))"
        )
        assert got == ("data here", 42)
    finally:
        k.ensure_ok("os.chdir(home)\nsys.path.remove(extra)")


@pytest.mark.parametrize("method", METHODS)
def test_edited_and_reloaded_helper_reaches_warm_pools(k, method):
    k.ensure_ok("write_helper('v1')\nimportlib.reload(helper_mod)")
    assert _mp_pool(k, method, "helper_mod.version()") == ["v1"]
    k.ensure_ok(f"kept = mp.get_context({method!r}).Pool(1)\nkept.apply(helper_mod.version)")
    try:
        k.ensure_ok("write_helper('v2')\nimportlib.reload(helper_mod)")
        assert _mp_pool(k, method, "helper_mod.version()") == ["v2"]
        assert k.evaluate("kept.apply(helper_mod.version)") == "v2"
    finally:
        k.ensure_ok("kept.terminate()\nkept.join()")


def test_autoreload_reaches_the_warm_pool(k):
    k.ensure_ok("write_helper('a1')\nimportlib.reload(helper_mod)\n%load_ext autoreload")
    k.ensure_ok("%autoreload 2")
    assert _mp_pool(k, "forkserver", "helper_mod.version()") == ["a1"]
    k.ensure_ok("write_helper('a2-longer')")
    assert k.evaluate("helper_mod.version()") == "a2-longer"  # autoreload ran
    assert _mp_pool(k, "forkserver", "helper_mod.version()") == ["a2-longer"]
    k.ensure_ok("%autoreload 0")


LOG_CELL = """
fmt = "%(levelname)s %(processName)s: %(message)s"
logging.basicConfig(level=logging.INFO, format=fmt, force=True)
ctx = mp.get_context({method!r})
p = ctx.Process(target=lambda: logging.info("info from a process"), name="LogProc")
p.start(); p.join()
with ctx.Pool(1) as pool:
    pool.apply(lambda: logging.info("info from a task"))
"""


@pytest.mark.parametrize("method", [*METHODS, "fork"])
def test_child_logging_shows_once_in_its_cell(k, method):
    try:
        res = k.ensure_ok(LOG_CELL.format(method=method))
        err = res.stderr
        assert err.count("INFO LogProc: info from a process") == 1, err
        assert err.count("info from a task") == 1, err
        assert "PoolWorker" in err.split("info from a task")[0].splitlines()[-1], err
        k.ensure_ok("mp.output.configure(logging=False)")
        res = k.ensure_ok(LOG_CELL.format(method=method))
        if method != "fork":  # a forked child inherits the kernel's handlers as they are
            assert "info from" not in res.stderr, res.stderr
    finally:
        k.ensure_ok("mp.output.configure(logging=True)\nlogging.getLogger().handlers.clear()")


@pytest.mark.parametrize("method", METHODS)
def test_a_manager_server_starts_in_the_current_world(k, method):
    """A ``Manager``'s server process is an mpnb process: it starts in the kernel's
    environ and working directory as they are now."""
    k.ensure_ok(f"in_process(mp.get_context({method!r}), lambda: 0)")  # the fork server exists
    k.ensure_ok(
        f"os.environ['MPNB_WORLD_MANAGER'] = 'manager-{method}'\n"
        "class WorldManager(mp.managers.BaseManager):\n"
        "    pass\n"
        "WorldManager.register('world', callable=lambda: {\n"
        "    'env': os.environ.get('MPNB_WORLD_MANAGER'), 'cwd': os.getcwd()},\n"
        "    proxytype=mp.managers.DictProxy)\n"
        f"with WorldManager(ctx=mp.get_context({method!r})) as m:\n"
        "    seen = m.world().copy()"
    )
    assert k.evaluate("seen") == {"env": f"manager-{method}", "cwd": k.evaluate("home")}

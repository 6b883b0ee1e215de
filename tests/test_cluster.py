"""``cluster=`` without Dask installed, and what ``import mpnb`` leaves out."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.timeout(60)]

_BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('dask', 'distributed'):
            raise ImportError(f'No module named {name!r} (blocked)')
        return None
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=50,
    )


def test_import_mpnb_and_a_local_pool_import_no_dask():
    done = _run(
        """
        import sys, mpnb
        with mpnb.Pool(1) as p:
            assert p.map(abs, [-1]) == [1]
        import mpnb.magics, mpnb.dashboard
        print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "make", ["mpnb.Pool(cluster='local')", "mpnb.ProcessPoolExecutor(cluster='tcp://127.0.0.1:1')"]
)
def test_cluster_without_the_extra_says_how_to_install_it(make):
    done = _run(
        f"""
        import mpnb
        try:
            {make}
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("DaskMissingError ")
    assert 'pip install "mpnb[dask]"' in done.stdout


def test_a_bad_cluster_argument_is_named():
    pytest.importorskip("distributed")
    import mpnb

    with pytest.raises(TypeError, match="cluster must be a Dask scheduler address"):
        mpnb.Pool(cluster=42)


def test_a_bad_number_of_processes_is_refused_before_any_cluster_starts():
    pytest.importorskip("distributed")
    import mpnb

    with pytest.raises(ValueError, match="Number of processes must be at least 1"):
        mpnb.Pool(0, cluster="local")


def test_a_parallel_cell_item_runs_where_its_control_block_does_not_exist():
    """On a Dask worker of another machine the kernel's shared-memory control block of a
    ``%%mp_pool`` run is missing: the item runs (map and SPMD forms), with no cancel
    flag and no wait for the other ranks; a failure comes back as ``ItemFailed``."""
    from mpnb.magics.cell_task import CellSpec, ItemFailed, run_item

    def spec(source: str, last: str | None, loop_target: str | None, size: int) -> CellSpec:
        return CellSpec(
            body=compile(source, "<cell>", "exec"),
            last=None if last is None else compile(last, "<cell>", "eval"),
            filename="<cell>",
            loop_target=loop_target,
            namespace={},
            control="mpnb-no-such-block-on-this-machine",
            keep_going=False,
            size=size,
        )

    assert run_item(spec("y = x * 2", "y", "x", 3), (1, 21)) == 42
    # SPMD: rank 0 of 2 does not wait for a rank that would mark the missing block.
    assert run_item(spec("r = mp_rank", "(r, mp_size)", None, 2), (0, 0)) == (0, 2)
    failed = run_item(spec("1 / x", None, "x", 1), (0, 0))
    assert isinstance(failed, ItemFailed) and isinstance(failed.error, ZeroDivisionError)

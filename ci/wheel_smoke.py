"""Smoke test of an installed (not editable) mpnb wheel: `make test-wheel` runs it with
the venv's python from a directory outside the checkout.

A Pool.map over functions defined in this script's `__main__` (a plain function and a
lambda, which the standard library cannot send under spawn and forkserver) on both start
methods, then the IPython extension's modules.
"""

import os
import sys
import sysconfig

import mpnb as mp

OFFSET = 100


def f(x):
    return x * x + OFFSET


def main() -> None:
    where = os.path.dirname(mp.__file__)
    site = sysconfig.get_paths()["purelib"]
    assert where.startswith(site), f"mpnb imported from {where}, not from {site}"
    for method in ("forkserver", "spawn"):
        with mp.get_context(method).Pool(2) as pool:
            assert pool.map(f, range(5)) == [100, 101, 104, 109, 116], method
            assert pool.map(lambda x: -x, range(3)) == [0, -1, -2], method
        print(f"wheel smoke: Pool.map under {method}: ok")
    import mpnb.dashboard.widget
    import mpnb.extension
    import mpnb.magics.pool
    import mpnb.output.stdlib  # noqa: F401  (the subpackages of the notebook layer)

    # This venv has no dask: nothing imported it, and cluster= says how to get it.
    assert not [m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")]
    try:
        mp.Pool(cluster="local")
    except ImportError as exc:
        assert 'pip install "mpnb[dask]"' in str(exc), exc
    else:
        raise AssertionError("Pool(cluster=...) without dask did not raise ImportError")
    print("wheel smoke: cluster= without dask asks for the extra: ok")
    print(f"wheel smoke: mpnb {mp.__version__} from {where} on {sys.version.split()[0]}: ok")


if __name__ == "__main__":
    main()

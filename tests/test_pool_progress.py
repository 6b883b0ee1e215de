"""``progress=True`` on the map family: a text bar outside Jupyter, a widget in it."""

from __future__ import annotations

import pytest

import mpnb

pytestmark = [pytest.mark.timeout(120)]


def double(x: int) -> int:
    return 2 * x


def _inverse(x: int) -> float:
    return 1 / x


def test_text_bar_for_every_map_call(capsys):
    with mpnb.get_context("forkserver").Pool(2) as pool:
        assert pool.map(double, range(20), progress=True) == [2 * x for x in range(20)]
        assert pool.starmap(pow, [(2, 3)] * 5, progress=True) == [8] * 5
        assert pool.map_async(double, range(7), progress=True).get(30) == [2 * x for x in range(7)]
        assert list(pool.imap(double, range(9), progress=True)) == [2 * x for x in range(9)]
        assert sorted(pool.imap_unordered(double, range(4), progress=True)) == [0, 2, 4, 6]
        # an iterable without len: the total is known once it runs out
        assert list(pool.imap(double, iter(range(6)), progress=True)) == [0, 2, 4, 6, 8, 10]
        with pytest.raises(ZeroDivisionError):
            pool.map(_inverse, [1, 0, 2], progress=True)
    err = capsys.readouterr().err
    for done in ("20/20", "5/5", "7/7", "9/9", "4/4", "6/6"):
        assert f"mpnb.Pool {done}" in err, err


def test_no_bar_unless_asked(capsys):
    with mpnb.get_context("forkserver").Pool(1) as pool:
        pool.map(double, range(5))
    assert "mpnb.Pool" not in capsys.readouterr().err


def test_widget_bar_in_a_kernel(module_kernel):
    module_kernel.ensure_ok("import mpnb\npool = mpnb.Pool(2)\ndef sq(x):\n    return x * x")
    res = module_kernel.ensure_ok("pool.map(sq, range(30), progress=True)[-1]")
    assert res.result == "841"
    views = [
        d
        for d in res.displays
        if "application/vnd.jupyter.widget-view+json" in d.get("content", d).get("data", {})
    ]
    assert views, res.displays
    module_kernel.ensure_ok("pool.terminate(); pool.join()")

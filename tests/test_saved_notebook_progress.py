"""A progress bar's final state: the text and HTML a saved notebook keeps."""

from __future__ import annotations

import io
import re

import pytest

from mpnb.progress import ProgressBar


@pytest.mark.core
def test_final_text_and_html() -> None:
    bar = ProgressBar(16, "mpnb.Pool", widget=False, stream=io.StringIO())
    bar.update(16)
    bar.close()
    assert re.fullmatch(r"mpnb\.Pool: 16/16 done in \d+\.\d s", bar.final_text())
    page = bar.final_html()
    assert 'class="mpnb-progress-final"' in page and "width:100%" in page
    assert "#5cb85c" in page and "<script" not in page

    failed = ProgressBar(16, widget=False, stream=io.StringIO())
    failed.update(7, failed=1)
    failed.close(failed=True)
    assert re.fullmatch(r"stopped at 7/16 after \d+\.\d s, 1 failed", failed.final_text(True))
    assert "#d9534f" in failed.final_html(True) and "width:44%" in failed.final_html(True)

    unknown = ProgressBar(None, widget=False, stream=io.StringIO())
    unknown.update(5)
    unknown.close()
    assert re.fullmatch(r"5 done in \d+\.\d s", unknown.final_text())


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_the_widget_gives_way_to_its_final_state(kernel) -> None:
    kernel.ensure_ok("import mpnb\npool = mpnb.Pool(2)\ndef inv(x):\n    return 1 / x")
    done = kernel.ensure_ok("len(pool.map(inv, range(1, 17), progress=True))")
    (update,) = [d for d in done.displays if d["msg_type"] == "update_display_data"]
    (shown,) = [d for d in done.displays if d["msg_type"] == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in shown["data"]
    assert update["transient"]["display_id"] == shown["transient"]["display_id"]
    assert "application/vnd.jupyter.widget-view+json" not in update["data"]
    assert re.fullmatch(r"mpnb\.Pool: 16/16 done in \d+\.\d s", update["data"]["text/plain"])
    assert "16/16 done in" in update["data"]["text/html"]

    failed = kernel.execute("pool.map(inv, [1, 0, 2], progress=True)")
    assert not failed.ok
    (update,) = [d for d in failed.displays if d["msg_type"] == "update_display_data"]
    assert update["data"]["text/plain"].startswith("mpnb.Pool: stopped at")
    kernel.ensure_ok("pool.terminate(); pool.join()")

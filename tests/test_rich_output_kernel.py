"""Rich output from children in a real kernel: ``display_data`` in the starting cell.

Each test runs cells through jupyter_client and asserts on the IOPub messages: a
``display(...)`` in a ``Process`` target, a pool task or a ``%%mp_pool`` item arrives as
``display_data`` with the MIME types of what was displayed and the parent header of the
cell that started the work (also after that cell finished); ``update()`` arrives as
``update_display_data`` on an id no other process can have; a figure ``plt.show()``
in a child arrives as PNG (SVG when asked); an ipywidget shows as text with a note; a
process's display items keep their place among its text lines.
"""

from __future__ import annotations

import base64

import pytest
from kernel_harness import TAG, messages_with, parent_of

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYPj/HwADAgH/"
    "pZ4tqgAAAABJRU5ErkJggg=="
)

SETUP = f"""
%load_ext mpnb
import os, sys, time
import mpnb as mp

PNG = {PNG!r}

def show_everything(tag):
    from IPython.display import HTML, JSON, SVG, Image, Markdown, display
    import pandas as pd
    display(pd.DataFrame({{"tag": [tag], "n": [1]}}))
    display(HTML(f"<b>html {{tag}}</b>"))
    display(Markdown(f"*markdown {{tag}}*"))
    display(Image(data=PNG, format="png"))
    display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'))
    display(JSON({{"tag": tag}}))
    return tag

def plot(tag):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2, 3])
    ax.set_title(str(tag))
    plt.show()
    return tag

def progress(tag, steps=3):
    from IPython.display import display
    handle = display(f"{{tag}}: 0/{{steps}}", display_id="progress")
    for i in range(1, steps + 1):
        handle.update(f"{{tag}}: {{i}}/{{steps}}")
    return tag

def interleaved(tag):
    from IPython.display import HTML, display
    for i in range(3):
        print(f"{{tag}} line {{i}}", end="" if i == 1 else "\\n")
        display(HTML(f"<i>{{tag}} item {{i}}</i>"))
    print(f"{{tag}} done")
    return tag

def widget(tag):
    import ipywidgets
    from IPython.display import display
    slider = ipywidgets.IntSlider(value=3, description=f"w{{tag}}")
    display(slider)
    print("still running", tag)
    return tag
"""

EVERYTHING = {
    "text/html",  # the DataFrame and HTML
    "text/markdown",
    "image/png",
    "image/svg+xml",
    "application/json",
}


def displays(messages, msg_type="display_data"):
    return [m for m in messages if m["msg_type"] == msg_type]


def mime_types(messages):
    return [set(m["content"]["data"]) for m in displays(messages)]


@pytest.fixture(params=["forkserver", "spawn"])
def method(request):
    """The start methods whose children start afresh (a forked one: its own test)."""
    return request.param


@pytest.fixture(scope="module")
def nb(module_kernel):
    module_kernel.ensure_ok(SETUP)
    assert module_kernel.evaluate("mp.output.active()") is True
    return module_kernel


def _check_everything(res, count=1):
    shown = displays(res.messages)
    assert all(parent_of(m) == res.msg_id for m in shown)
    assert len(shown) == 6 * count
    kinds = mime_types(res.messages)
    assert all("text/plain" in kind for kind in kinds)
    assert set().union(*kinds) >= EVERYTHING | {"text/plain"}
    frames = [m for m in shown if "<table" in m["content"]["data"].get("text/html", "")]
    assert len(frames) == count, "the DataFrame's HTML table"
    for m in shown:
        assert m["content"]["metadata"]["mpnb"]["process"]
    images = [
        m["content"]["data"]["image/png"] for m in shown if "image/png" in m["content"]["data"]
    ]
    assert all(base64.b64decode(png) == PNG for png in images)


def test_process_displays_every_kind(nb, method):
    res = nb.ensure_ok(
        f"p = mp.get_context({method!r}).Process(target=show_everything, args=(1,))\n"
        "p.start(); p.join()"
    )
    _check_everything(res)
    assert {m["content"]["metadata"]["mpnb"]["process"] for m in displays(res.messages)} == {
        nb.evaluate("p.name")
    }


def test_pool_tasks_display_every_kind(nb, method):
    res = nb.ensure_ok(
        f"with mp.get_context({method!r}).Pool(2) as pool:\n"
        "    done = pool.map(show_everything, range(2))\n"
        "done"
    )
    assert res.result == "[0, 1]"
    _check_everything(res, count=2)
    kinds = [m["msg_type"] for m in res.messages if m["msg_type"] != "status"]
    assert kinds.index("execute_result") > max(
        i for i, kind in enumerate(kinds) if kind == "display_data"
    ), "a task's display arrived after the result"


def test_mp_pool_items_display_every_kind(nb):
    res = nb.ensure_ok("%%mp_pool -n 2 --no-progress -o tags for x in range(2)\nshow_everything(x)")
    _check_everything(res, count=2)
    nb.ensure_ok("%mp_pool --shutdown")


def test_matplotlib_figures_from_workers_arrive_as_png(nb, method):
    res = nb.ensure_ok(
        f"with mp.get_context({method!r}).Pool(2) as pool:\n    pool.map(plot, range(3))"
    )
    shown = displays(res.messages)
    assert len(shown) == 3
    for m in shown:
        assert parent_of(m) == res.msg_id
        png = base64.b64decode(m["content"]["data"]["image/png"])
        assert png.startswith(b"\x89PNG")
        assert m["content"]["data"]["text/plain"].startswith("<Figure")


def test_a_displayed_figure_arrives_as_png(nb, method):
    res = nb.ensure_ok(
        "def show_figure():\n"
        "    import matplotlib.pyplot as plt\n"
        "    fig, ax = plt.subplots(figsize=(2, 2))\n"
        "    ax.bar([1, 2], [3, 4])\n"
        "    display(fig)\n"
        "    plt.close(fig)\n"
        f"p = mp.get_context({method!r}).Process(target=show_figure)\n"
        "p.start(); p.join()"
    )
    (shown,) = displays(res.messages)
    assert parent_of(shown) == res.msg_id
    assert base64.b64decode(shown["content"]["data"]["image/png"]).startswith(b"\x89PNG")


def test_standard_library_children_display_under_the_extension(nb):
    res = nb.ensure_ok(
        "import multiprocessing\n"
        "from IPython.display import HTML as StdHTML, display as std_display\n"
        "with multiprocessing.get_context('spawn').Pool(1) as std_pool:\n"
        "    std_pool.map(std_display, [StdHTML('<b>from the stdlib</b>')])"
    )
    (shown,) = displays(res.messages)
    assert parent_of(shown) == res.msg_id
    assert shown["content"]["data"]["text/html"] == "<b>from the stdlib</b>"


def test_figures_in_svg_when_asked(nb):
    try:
        res = nb.ensure_ok(
            "mp.output.configure(figure_formats=['svg', 'png'])\n"
            "p = mp.get_context('spawn').Process(target=plot, args=(1,))\n"
            "p.start(); p.join()"
        )
    finally:
        nb.ensure_ok("mp.output.configure(figure_formats=[])")
    (shown,) = displays(res.messages)
    assert {"image/svg+xml", "image/png"} <= set(shown["content"]["data"])
    assert "<svg" in shown["content"]["data"]["image/svg+xml"]


def test_figure_formats_of_the_kernel_inline_backend(nb):
    res = nb.ensure_ok(
        "import matplotlib.pyplot as plt\n"
        "from matplotlib_inline.backend_inline import set_matplotlib_formats\n"
        "set_matplotlib_formats('svg')\n"
        "p = mp.get_context('forkserver').Process(target=plot, args=(2,))\n"
        "p.start(); p.join()\n"
        "set_matplotlib_formats('png')"
    )
    (shown,) = displays(res.messages)
    assert set(shown["content"]["data"]) == {"text/plain", "image/svg+xml"}


def test_a_bad_figure_format_is_refused(nb):
    res = nb.execute("mp.output.configure(figure_formats=['gif'])")
    assert res.error is not None and res.error.ename == "ValueError"
    assert "gif" in res.error.evalue and "png" in res.error.evalue


def test_display_id_updates_and_two_workers_never_collide(nb, method):
    res = nb.ensure_ok(
        f"with mp.get_context({method!r}).Pool(2) as pool:\n"
        "    pool.map(progress, ['a', 'b'], chunksize=1)"
    )
    first = displays(res.messages)
    updates = displays(res.messages, "update_display_data")
    assert len(first) == 2 and len(updates) == 6
    assert all(parent_of(m) == res.msg_id for m in first + updates)
    ids = {
        m["content"]["data"]["text/plain"].split(":")[0]: m["content"]["transient"]["display_id"]
        for m in first
    }
    assert set(ids) == {"'a", "'b"}
    assert ids["'a"] != ids["'b"], "two workers' 'progress' displays share an id"
    for tag, display_id in ids.items():
        mine = [m for m in updates if m["content"]["transient"]["display_id"] == display_id]
        assert [m["content"]["data"]["text/plain"] for m in mine] == [
            f"{tag}: {i}/3'" for i in (1, 2, 3)
        ]


def test_a_child_updates_a_display_made_in_the_kernel(nb):
    res = nb.ensure_ok(
        "from IPython.display import display\n"
        "kernel_handle = display('made in the kernel', display_id=True)\n"
        "p = mp.get_context('spawn').Process(target=kernel_handle.update, args=('updated',))\n"
        "p.start(); p.join()"
    )
    (made,) = displays(res.messages)
    (update,) = displays(res.messages, "update_display_data")
    assert update["content"]["transient"] == made["content"]["transient"]
    assert update["content"]["data"]["text/plain"] == "'updated'"


def test_clear_output_from_a_child_clears_the_starting_cell(nb, method):
    res = nb.ensure_ok(
        "def clearing():\n"
        "    from IPython.display import clear_output\n"
        "    print('soon gone')\n"
        "    clear_output(wait=True)\n"
        "    display('what stays')\n"
        f"p = mp.get_context({method!r}).Process(target=clearing)\n"
        "p.start(); p.join()"
    )
    kinds = [
        m["msg_type"] for m in res.messages if m["msg_type"] not in ("status", "execute_input")
    ]
    assert kinds == ["stream", "clear_output", "display_data"]
    clear = next(m for m in res.messages if m["msg_type"] == "clear_output")
    assert clear["content"] == {"wait": True} and parent_of(clear) == res.msg_id


def test_display_after_the_cell_finished_goes_to_that_cell(nb):
    first = nb.ensure_ok(
        "def later(ev):\n"
        "    from IPython.display import HTML, display\n"
        "    ev.wait(120)\n"
        "    display(HTML('<p>late item</p>'))\n"
        "ev = mp.Event()\n"
        "p_late = mp.Process(target=later, args=(ev,))\n"
        "p_late.start()"
    )
    second = nb.ensure_ok("ev.set(); p_late.join(); print('second cell')")
    late = second.messages + nb.collect_iopub(30, until=lambda m: m["msg_type"] == "display_data")
    (shown,) = displays(late)
    assert parent_of(shown) == first.msg_id
    assert shown["content"]["data"]["text/html"] == "<p>late item</p>"
    assert second.stdout == "second cell\n"


def test_display_items_keep_their_order_with_the_process_text(nb, method):
    res = nb.ensure_ok(
        f"p = mp.get_context({method!r}).Process(target=interleaved, args=('P',))\n"
        "p.start(); p.join()"
    )
    seen = []
    for m in res.messages:
        if m["msg_type"] == "stream":
            seen.append(("text", m["content"]["text"]))
        elif m["msg_type"] == "display_data":
            seen.append(("item", m["content"]["data"]["text/html"]))
    assert seen == [
        ("text", "P line 0\n"),
        ("item", "<i>P item 0</i>"),
        ("text", "P line 1"),
        ("item", "<i>P item 1</i>"),
        ("text", "P line 2\n"),
        ("item", "<i>P item 2</i>"),
        ("text", "P done\n"),
    ]


def test_several_processes_label_their_items(nb):
    res = nb.ensure_ok(
        "ps = [mp.get_context('forkserver').Process(target=interleaved, args=(t,)) "
        "for t in 'AB']\n"
        "for p in ps: p.start()\n"
        "for p in ps: p.join()\n"
        "names = {p.name: t for p, t in zip(ps, 'AB')}"
    )
    names = nb.evaluate("names")
    shown = displays(res.messages)
    assert len(shown) == 6
    for m in shown:
        tag = names[m["content"]["metadata"]["mpnb"]["process"]]
        assert m["content"]["data"]["text/html"].startswith(f"<i>{tag} item")
    labels = {line for line in res.stdout.splitlines() if line.startswith("[display:")}
    assert labels <= {f"[display:{name}]" for name in names}
    assert labels, "no item labelled once two processes wrote into the cell"
    for line in res.stdout.splitlines():
        assert TAG.sub("", line) == line or TAG.match(line).group(2) in names


def test_an_ipywidget_from_a_child_shows_as_text_with_a_note(nb, method):
    res = nb.ensure_ok(
        f"p = mp.get_context({method!r}).Process(target=widget, args=(1,))\n"
        "p.start(); p.join()\n"
        "p.exitcode"
    )
    assert res.result == "0"
    (shown,) = displays(res.messages)
    assert set(shown["content"]["data"]) == {"text/plain"}
    text = shown["content"]["data"]["text/plain"]
    assert "IntSlider" in text and "ipywidget" in text and "kernel" in text
    assert len(text.splitlines()) == 2
    assert "Traceback" not in res.stdout + res.stderr
    assert "still running 1" in res.stdout
    assert not [m for m in res.messages if m["msg_type"].startswith("comm")]


def test_display_needs_no_import_and_the_kernel_import_works(nb, method):
    res = nb.ensure_ok(
        "from IPython.display import HTML as KernelHTML, display as kernel_display\n"
        "def both(tag):\n"
        "    display(KernelHTML(f'<b>builtin {tag}</b>'))\n"
        "    kernel_display(KernelHTML(f'<b>imported {tag}</b>'))\n"
        f"p = mp.get_context({method!r}).Process(target=both, args=('p',))\n"
        "p.start(); p.join()\n"
        f"with mp.get_context({method!r}).Pool(1) as pool:\n"
        "    pool.map(both, ['t'])"
    )
    assert [m["content"]["data"]["text/html"] for m in displays(res.messages)] == [
        "<b>builtin p</b>",
        "<b>imported p</b>",
        "<b>builtin t</b>",
        "<b>imported t</b>",
    ]
    assert "IPython.core.display.HTML object" not in res.stdout
    res = nb.ensure_ok(
        "%%mp_pool -n 1 --no-progress for x in [1]\ndisplay(KernelHTML('<i>item</i>'))"
    )
    assert [m["content"]["data"]["text/html"] for m in displays(res.messages)] == ["<i>item</i>"]
    nb.ensure_ok("%mp_pool --shutdown")


def test_a_child_that_does_not_display_imports_neither_ipython_nor_matplotlib(nb):
    res = nb.ensure_ok(
        "def loaded():\n"
        "    import sys\n"
        "    return sorted(m for m in sys.modules if m.split('.')[0] in "
        "('IPython', 'matplotlib', 'ipykernel', 'pandas', 'ipywidgets'))\n"
        "for method in ('spawn', 'forkserver'):\n"
        "    with mp.get_context(method).Pool(1) as pool:\n"
        "        print(method, pool.apply(loaded))"
    )
    assert res.stdout.splitlines() == ["spawn []", "forkserver []"]


def test_a_forked_child_displays_through_the_relay(nb):
    res = nb.ensure_ok(
        "from IPython.display import display as kernel_display\n"
        "import ipywidgets, matplotlib.pyplot\n"
        "def forked():\n"
        "    kernel_display(HTML_OBJ)\n"
        "    plot('forked')\n"
        "    widget('forked')\n"
        "from IPython.display import HTML\n"
        "HTML_OBJ = HTML('<b>forked</b>')\n"
        "p = mp.get_context('fork').Process(target=forked)\n"
        "p.start(); p.join()\n"
        "p.exitcode"
    )
    assert res.result == "0"
    shown = displays(res.messages)
    assert [sorted(m["content"]["data"]) for m in shown] == [
        ["text/html", "text/plain"],
        ["image/png", "text/plain"],
        ["text/plain"],
    ]
    assert "IntSlider" in shown[2]["content"]["data"]["text/plain"]
    # The widget's comm went nowhere, not through the kernel's sockets it inherited.
    assert not [m for m in res.messages if m["msg_type"].startswith("comm")]
    assert "from fork" not in nb.terminal_output()
    assert all(m["content"]["metadata"]["mpnb"]["process"] == nb.evaluate("p.name") for m in shown)
    assert all(parent_of(m) == res.msg_id for m in shown)
    assert not messages_with(res.messages, "Traceback")

"""The internals of cloudpickle, IPython and ipykernel that mpnb uses (``mpnb._compat``).

A release of a dependency that renames or changes one of them fails here, loudly,
instead of changing what users see.
"""

from __future__ import annotations

import pickle
import traceback

import pytest

from mpnb import _compat, _pickle

pytestmark = pytest.mark.core


def test_every_internal_mpnb_uses_still_behaves():
    assert _compat.check() == []


def _make_function():
    source = "def cell_function(x):\n    y = x + 1\n    raise ValueError(y)\n"
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source, "/tmp/ipykernel_1/cell-42.py", "exec"), namespace)
    return namespace["cell_function"]


def test_code_location_survives_the_pickler():
    """A function sent by value keeps its file and lines, whatever cloudpickle does."""
    func = _make_function()
    assert not _pickle.by_reference(func)
    copy = pickle.loads(_pickle.dumps(func))
    assert copy is not func
    assert copy.__code__.co_filename == "/tmp/ipykernel_1/cell-42.py"
    assert copy.__code__.co_firstlineno == 1
    with pytest.raises(ValueError) as info:
        copy(1)
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.name) == (
        "/tmp/ipykernel_1/cell-42.py",
        3,
        "cell_function",
    )


def test_nested_code_keeps_its_location_too():
    source = "def outer():\n    def inner():\n        return 1 / 0\n    return inner\n"
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source, "/tmp/ipykernel_1/cell-7.py", "exec"), namespace)
    inner = pickle.loads(_pickle.dumps(namespace["outer"]()))
    with pytest.raises(ZeroDivisionError) as info:
        inner()
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno) == ("/tmp/ipykernel_1/cell-7.py", 3)


class _Owner:
    @classmethod
    def make(cls):
        return cls.__name__

    def method(self):
        return type(self).__name__


def test_methods_of_importable_classes_go_by_reference():
    """As the standard library sends them: run in their module, on its globals."""
    for method in (_Owner.make, _Owner().method):
        data = _pickle.dumps(method)
        assert bytes(data) == pickle.dumps(method, _pickle.PROTOCOL)
        assert pickle.loads(data)() == "_Owner"


def test_cell_label_names_cells_of_the_shell():
    import types

    from IPython.core.compilerop import CachingCompiler

    compiler = CachingCompiler()
    filename = compiler.cache("a = 1\n", 3)
    shell = types.SimpleNamespace(compile=compiler)
    assert _compat.cell_label(shell, filename) == "Cell In[3]"
    assert _compat.cell_label(shell, __file__) is None

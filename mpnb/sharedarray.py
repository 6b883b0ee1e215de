"""numpy arrays in shared memory from the start: ``mp.shared_array``, ``mp.shared_like``.

Sending such an array (or a view of it) to any number of tasks or processes sends only
its segment's name; each receiver maps the segment writable, so tasks read and write
it with no copy and the parent sees their writes. The segment is removed when the last
array of it in the process that made it is gone and no pool job using it is pending;
one left by a killed kernel is removed by the next kernel. Create shared arrays in the
parent (the kernel): a process that made one removes it when its own copy is gone.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any

from . import _owner
from ._pickle import sharedmem

if TYPE_CHECKING:
    import numpy
    import numpy.typing as npt

__all__ = ["shared_array", "shared_like"]


def _check_dtype(dtype: Any, argument: str) -> numpy.dtype[Any]:
    import numpy

    try:
        resolved = numpy.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{argument}={dtype!r} is not a numpy dtype: {exc}") from exc
    if resolved.hasobject or resolved.kind not in "biufcmM":
        raise TypeError(
            f"{argument}={dtype!r} cannot live in shared memory: only numeric, bool and "
            "datetime dtypes can (objects and strings are references to this process's "
            "memory); send such arrays as ordinary arguments instead"
        )
    return resolved


def _check_shape(shape: Any) -> tuple[int, ...]:
    items = (shape,) if not isinstance(shape, (tuple, list)) else tuple(shape)
    out = []
    for item in items:
        try:
            size = operator.index(item)
        except TypeError:
            raise TypeError(
                f"shape={shape!r}: each dimension must be an integer, not {type(item).__name__}"
            ) from None
        if size < 0:
            raise ValueError(f"shape={shape!r}: dimensions cannot be negative")
        out.append(size)
    return tuple(out)


def shared_array(
    shape: int | tuple[int, ...], dtype: npt.DTypeLike = float
) -> numpy.ndarray[Any, Any]:
    """A zero-filled numpy array of ``shape`` and ``dtype`` in shared memory."""
    dims = _check_shape(shape)
    resolved = _check_dtype(dtype, "dtype")
    import numpy

    _owner.for_new_child()  # in a kernel: name the segment after it
    nbytes = math.prod(dims) * resolved.itemsize
    mapping = sharedmem.create(nbytes)
    return numpy.ndarray(dims, dtype=resolved, buffer=mapping)


def shared_like(a: npt.ArrayLike) -> numpy.ndarray[Any, Any]:
    """A copy of ``a`` in shared memory (same shape and dtype; C order)."""
    import numpy

    if not isinstance(a, numpy.ndarray):
        try:
            a = numpy.asarray(a)
        except Exception as exc:
            raise TypeError(f"a={type(a).__name__!s} cannot be made into an array: {exc}") from exc
    _check_dtype(a.dtype, "a.dtype")
    out = shared_array(a.shape, a.dtype)
    out[...] = a
    return out

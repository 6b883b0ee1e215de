"""mpnb's pickling: by value only what a receiver cannot import (the transport layer).

- ``pickler``: the pickler and per-thread reuse;
- ``reducers``: code objects whole, methods by reference, proxies, ctypes classes;
- ``arrays``: the shared-memory segments: names, owners, removal;
- ``buffers``: large buffers out of band (protocol 5) through shared memory, reused;
- ``sharedmem``: arrays living in shared memory (``mp.shared_array``);
- ``namespaces``: one globals dict per notebook namespace in each receiver;
- ``diagnose``: unsendable objects and their errors;
- ``switch``: install into and uninstall from the standard library; process objects.

This module only re-exports what the rest of mpnb uses.
"""

from . import buffers, sharedmem
from .arrays import SHARED_ARRAY_MIN, in_band, release_segments, segments_released_on_error
from .diagnose import (
    PICKLING_ERRORS,
    SerializationError,
    checked_dumps,
    describe_unpicklable,
    dumps_tracked,
    fails,
)
from .namespaces import remember_namespaces
from .pickler import PROTOCOL, Pickled, Pickler, dump, dumps, loads, plain_dumps
from .reducers import by_reference
from .switch import install, installed, reduce_process, uninstall

__all__ = [
    "Pickler",
    "PROTOCOL",
    "dumps",
    "plain_dumps",
    "loads",
    "dump",
    "Pickled",
    "SerializationError",
    "PICKLING_ERRORS",
    "describe_unpicklable",
    "fails",
    "checked_dumps",
    "dumps_tracked",
    "SHARED_ARRAY_MIN",
    "buffers",
    "sharedmem",
    "in_band",
    "release_segments",
    "segments_released_on_error",
    "remember_namespaces",
    "by_reference",
    "install",
    "uninstall",
    "installed",
    "reduce_process",
]

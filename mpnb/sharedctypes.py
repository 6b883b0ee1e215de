"""``multiprocessing.sharedctypes``: ctypes objects in shared memory.

The standard library's functions: the ctypes type of a ``Value`` or ``Array`` (a
``Structure`` defined in a cell, say) travels with mpnb's pickler when the object is
passed to an mpnb process.
"""
from multiprocessing.sharedctypes import *  # noqa: F401,F403
from multiprocessing.sharedctypes import __all__  # noqa: F401

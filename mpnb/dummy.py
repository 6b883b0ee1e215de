"""``multiprocessing.dummy``: the same API on threads (nothing is pickled)."""
from multiprocessing.dummy import *  # noqa: F401,F403
from multiprocessing.dummy import __all__  # noqa: F401

"""``multiprocessing.shared_memory``: ``SharedMemory`` and ``ShareableList``."""
from multiprocessing.shared_memory import *  # noqa: F401,F403
from multiprocessing.shared_memory import __all__  # noqa: F401

"""The pool engine behind ``mpnb.pool`` and ``mpnb.futures``.

- ``frames``: many connection messages per system call (the manager thread's I/O);
- ``worker``: the loop a worker process runs;
- ``core``: the local engine (``PoolCore``): workers, queue, manager thread.

``mpnb.pool`` (the standard library's ``Pool`` API) and ``mpnb.futures``
(``ProcessPoolExecutor``) sit on top. Nothing here is public API.
"""
__all__: list[str] = []

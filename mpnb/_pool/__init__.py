"""The pool engine behind ``mpnb.pool`` and ``mpnb.futures``.

Imports flow one way, each module from those above it:

- ``frames``: many connection messages per system call (the manager thread's I/O);
- ``protocol``: the messages between pool and worker, the ``Task`` and the ``Job``
  interface an engine delivers results to;
- ``telemetry``: what the registry (the monitor) and progress bars hear of tasks;
- ``worker``: the loop a worker process runs;
- ``core``: the local engine (``PoolCore``): workers, queue, manager thread;
- ``tasks``: calls and chunks turned into ``Task``s, pickled in the caller's thread;
- ``results``: the jobs ``Pool`` returns (``ApplyResult``, ``MapResult``, the ``imap``
  iterators);
- ``executor_jobs``: the job each executor future has, and what an executor raises;
- ``initializer``: a pool's initializer and ``initargs``, sent with each worker at start;
- ``feeder``: the lazily read input of an ``imap``.

A second engine (one that runs tasks elsewhere) would take the same ``Task``s and
deliver to the same ``Job``s, next to ``core``.

``mpnb.pool`` (the standard library's ``Pool`` API) and ``mpnb.futures``
(``ProcessPoolExecutor``) sit on top. Nothing here is public API.
"""

__all__: list[str] = []

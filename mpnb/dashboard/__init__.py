"""The live dashboard behind ``mpnb.monitor()`` and ``%mp_monitor``, by mechanism:

- ``sampler``: a daemon thread that reads the registry and psutil every ``interval``
  seconds (and records exits in the registry); the only module of mpnb that imports
  psutil;
- ``snapshot``: the immutable samples it publishes (processes, pools, the machine);
- ``views``: a snapshot as a text table and as self-contained HTML;
- ``widget``: the ipywidgets dashboard that the sampler updates, and ``monitor()``;
- ``cluster_rows``: the workers of Dask clusters, from a provider that cluster pools
  install (this package imports no Dask).

Nothing here is imported by ``import mpnb``: only calling ``mpnb.monitor()`` or
``%mp_monitor`` loads it (and psutil, and ipywidgets when a widget is shown).
"""

__all__: list[str] = []

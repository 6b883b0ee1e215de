"""What ``cluster=`` names, as a ``distributed.Client``: an address, a client, "local".

- a scheduler address (``"tcp://127.0.0.1:8786"``): a client of the pool's own,
  closed with the pool;
- a ``distributed.Client``: used as it is, never closed by the pool;
- ``"local"``: a ``LocalCluster`` on loopback (``n`` worker processes of one thread
  each, no dashboard) and its client, both the pool's, closed with it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from distributed import Client, LocalCluster

__all__ = ["Connection", "connect", "CONNECT_TIMEOUT"]

# Seconds to reach a scheduler by address.
CONNECT_TIMEOUT = 10


class Connection:
    """A client, and what the pool must close with it (its own client, its cluster)."""

    def __init__(self, client: Client, own_client: bool, cluster: Any = None) -> None:
        self.client = client
        self.own_client = own_client
        self.cluster = cluster
        self.address = str(getattr(client.scheduler, "address", "") or "")

    def threads(self) -> int:
        """The cluster's worker threads, all together."""
        return sum(self.client.nthreads().values())

    def close(self) -> None:
        client, cluster = self.client, self.cluster
        self.cluster = None
        if self.own_client and client.status not in ("closed", "closing"):
            try:
                client.close()
            except Exception:
                pass
        if cluster is not None:
            cluster.close()


def connect(cluster: Any, processes: int | None = None) -> Connection:
    """A ``Connection`` for the ``cluster=`` argument of a pool (see the module)."""
    if isinstance(cluster, Client):
        if cluster.status not in ("running", "newly-created"):
            raise ValueError(f"cluster: the Dask client is {cluster.status}; pass a running one")
        return Connection(cluster, own_client=False)
    if cluster == "local":
        local = LocalCluster(
            n_workers=processes or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
            preload=["mpnb.cluster.worker_setup"],
        )
        try:
            client = Client(local, set_as_default=False)
        except BaseException:
            local.close()
            raise
        return Connection(client, own_client=True, cluster=local)
    if isinstance(cluster, str) and "://" in cluster or isinstance(cluster, str) and ":" in cluster:
        try:
            client = Client(cluster, set_as_default=False, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise ConnectionError(
                f"cluster={cluster!r}: no Dask scheduler answered there within "
                f"{CONNECT_TIMEOUT} s ({exc}). Start one (`dask scheduler`), or pass "
                f'cluster="local" for a cluster on this machine'
            ) from exc
        return Connection(client, own_client=True)
    raise TypeError(
        f"cluster must be a Dask scheduler address ('tcp://host:8786'), a "
        f"distributed.Client or 'local'; not {cluster!r}"
    )

"""Where a grid flow's cells run: Prefect's DaskTaskRunner (prefect-dask) on a Dask cluster.

    python -m flows.mechanism --preset ci --dask_address local          # a LocalCluster here
    dask scheduler &                                                     # or a cluster of machines:
    dask worker tcp://HOST:8786 --nworkers 2 --nthreads 1                # on each, in a checkout
    python -m flows.mechanism --dask_address tcp://HOST:8786             # of this commit, same path

Why Dask and not Ray: the grids' cells are independent Python calls that read and write
files under the repo (cell results, policies), which is what Dask's scheduler and workers
do with nothing else to run; dask and distributed are pure-Python wheels (Ray ships a
~60 MB runtime with its own object store, dashboard and raylet), and `dask worker` joins a
multi-machine cluster with one command. Every worker needs the repo at the same path
(a shared filesystem, or a checkout of the same commit with the DVC outputs pulled),
since cells read and write relative paths there.
"""

from __future__ import annotations

LOCAL = "local"  # dask_address: start a LocalCluster of `workers` processes for this flow run


def dask_task_runner(address: str, workers: int):
    """A DaskTaskRunner for `address` ('local' or a scheduler such as tcp://host:8786): one
    thread per worker process, as the process pool's cells (torch on one core each)."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ImportError("dask_address needs prefect-dask: pip install -e '.[dask]'") from None
    if address == LOCAL:
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    if "://" not in address:
        raise ValueError(f"dask_address {address!r}: give 'local' or a scheduler address such "
                         "as tcp://host:8786")
    return DaskTaskRunner(address=address)

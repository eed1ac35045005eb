"""The Prefect flow `pgrpo-compare`: algorithms x seeds on the pipeline's data, summarized.

    python -m flows.compare                                  # params.yaml, section compare
    python -m flows.compare --seeds 0,1 --algorithms grpo,pgrpo
    prefect deployment run pgrpo-compare/params -p 'seeds=[0,1,2,3]'   # python -m flows.serve
    python -m flows.compare --dask_address tcp://host:8786   # seeds spread over a Dask cluster

    shared stages (cached tasks of the pipeline) -> train_seed per (seed, algorithm)
        -> evaluate_seed per seed -> summarize (reports/compare/: report.md, figures)

The shared stages run on the params file as the pgrpo-pipeline flow runs them (same
tasks, same cache), without DVC commits: the comparison's outputs live apart, under
models/compare and reports/compare. One MLflow parent run holds every stage's run.
"""


import argparse
import sys
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows.pipeline import ParamsFile, RunName
from pgrpo.stages import registry
from pgrpo.experiments.compare import check_shared_outputs, load_compare
from tasks import compare as tasks
from tasks import stages

Seeds = Annotated[list[int] | None, Field(min_length=1, description=(
    "policy seeds, one run of every algorithm each; empty = compare.seeds of the params file"))]
CompareAlgorithms = Annotated[list[str] | None, Field(min_length=1, description=(
    "keys of compare.algorithms (grpo, grpo_batch, pgrpo, pgrpo_random by default); the "
    "reference is always trained; empty = all"))]


DaskAddress = Annotated[str | None, Field(description=(
    "train and evaluate the seeds on Dask: 'local' (a LocalCluster of dask_workers processes "
    "here) or a scheduler such as tcp://host:8786 (flows/dask_runner.py); empty = one by one"))]
DaskWorkers = Annotated[int, Field(ge=1, description=(
    "worker processes of a 'local' Dask cluster (each training uses every core it is given)"))]


def _seeds_on_dask(params_file: str, algorithms: list[str] | None, seeds: list[int],
                   names: list[str], parent_run: str | None) -> None:
    """Every (seed, algorithm) training as a task on the flow's DaskTaskRunner, each seed's
    evaluation as soon as its trainings are done. `parent_run`: the comparison's MLflow run,
    which a worker on another machine cannot read from this process's environment."""
    trained = {s: [tasks.train_seed.submit(params_file, algorithms, s, a, parent_run)
                   for a in names] for s in seeds}
    evaluated = [tasks.evaluate_seed.submit(params_file, algorithms, s, parent_run,
                                            wait_for=trained[s]) for s in seeds]
    for f in evaluated:
        f.result()  # raises the first failure; finished seeds stay on disk and resume


_seeds_on_dask = flow(name="pgrpo-compare-seeds")(_seeds_on_dask)


def compare(params_file: ParamsFile = "params.yaml", seeds: Seeds = None,
            algorithms: CompareAlgorithms = None, run_name: RunName = None,
            dask_address: DaskAddress = None, dask_workers: DaskWorkers = 2) -> dict[str, Any]:
    """Train every algorithm with every seed on the same data; report means with intervals.

    Args:
        params_file: params file with one section per stage (and optionally `compare`)
        seeds: policy seeds, one run of every algorithm each; empty = compare.seeds
        algorithms: keys of compare.algorithms; the reference is always trained; empty = all
        run_name: name of the MLflow parent run; empty = prefect-<flow run name>
        dask_address: 'local' or tcp://host:port: the seeds on a Dask cluster; empty = here
        dask_workers: processes of a 'local' Dask cluster
    """
    from prefect.runtime import flow_run

    from pgrpo.core.config import load_section
    from pgrpo.tracking.mlflow_tracking import TrackingConfig, pipeline_run

    log = get_run_logger()
    cfg = load_compare(params_file, seeds, algorithms)  # errors before anything runs
    names, seed_list = list(cfg.algorithms), list(cfg.seeds)
    log.info("comparing %s over seeds %s", names, seed_list)
    track = load_section(params_file, "tracking", TrackingConfig)
    with pipeline_run(track, params_file, run_name or f"prefect-{flow_run.get_name()}") as parent:
        for stage in registry.before("train_policy"):  # the data and reward model, shared
            t = getattr(stages, stage)
            if not stages.cache_usable(stage, params_file):
                t = t.with_options(refresh_cache=True)
            t(params_file=params_file)
            stages.record_outputs(stage, params_file)
        check_shared_outputs()
        if dask_address:
            from flows.dask_runner import dask_task_runner

            runner = dask_task_runner(dask_address, dask_workers)
            _seeds_on_dask.with_options(task_runner=runner)(
                params_file, algorithms, seed_list, names, parent)
            return tasks.summarize(params_file, algorithms, seed_list)
        for seed in seed_list:
            for alg in names:
                tasks.train_seed(params_file, algorithms, seed, alg)
            tasks.evaluate_seed(params_file, algorithms, seed)
        return tasks.summarize(params_file, algorithms, seed_list)


compare = flow(name="pgrpo-compare", log_prints=True)(compare)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the pgrpo-compare flow once, here")
    parser.add_argument("--params_file", default="params.yaml")
    parser.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--algorithms", default=None, help="comma-separated, e.g. grpo,pgrpo")
    parser.add_argument("--run_name", default=None)
    parser.add_argument("--dask_address", default=None,
                        help="'local' or tcp://host:8786: the seeds on a Dask cluster")
    parser.add_argument("--dask_workers", type=int, default=2)
    a = parser.parse_args(argv)
    summary = compare(params_file=a.params_file,
                      seeds=[int(s) for s in a.seeds.split(",")] if a.seeds else None,
                      algorithms=a.algorithms.split(",") if a.algorithms else None,
                      run_name=a.run_name, dask_address=a.dask_address,
                      dask_workers=a.dask_workers)
    for c in summary["claims"]:
        print(f"{c['verdict']:>13}: {c['claim']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

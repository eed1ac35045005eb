"""Prefect tasks, one thin task per pipeline stage (tasks/stages.py), each calling
pgrpo.orchestration.pipeline.run_stage: the same function `dvc repro` runs through the CLI.

Kept outside the library so that `pgrpo` imports without Prefect (the GPU machines
have no MLOps stack). The flow that chains them: flows/pipeline.py.

    from tasks import prepare, train_policy
    prepare.fn("params.yaml")                     # no Prefect run, just the stage
"""

from tasks.stages import (
    STAGES,
    ProgressLogger,
    assign_groups,
    evaluate,
    prepare,
    stage_cache_key,
    train_policy,
    train_reward,
)

__all__ = ["STAGES", "ProgressLogger", "assign_groups", "evaluate", "prepare", "stage_cache_key",
           "train_policy", "train_reward"]

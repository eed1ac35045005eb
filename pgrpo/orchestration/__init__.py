"""Running stages: the stage runner behind every front door (DVC, Prefect, the CLI),
the code a stage runs, the key of a stage's result, and the locks between runs.

    pipeline.py     python -m pgrpo.orchestration.pipeline <stage>: the cmd of every DVC stage
    stage_code.py   the files of the code a stage runs, computed from its imports
    stage_key.py    a stage result's key: params, input hashes, code hashes
    run_lock.py     flock-based locks with a named holder

Imports pgrpo.tracking and below (tests/test_layers.py).
"""

"""Prefect tasks, one thin task per pipeline stage, each calling the stage function in pgrpo/.

Kept separate from the library so that `pgrpo` imports without Prefect (the GPU
machines have no MLOps stack). The tasks arrive with the pipeline issue.
"""

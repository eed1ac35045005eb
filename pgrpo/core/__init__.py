"""The algorithm and its trainer: advantages, loss, rollouts, the training loop,
checkpoints, models, prompts and rule rewards, configs. Imports torch, transformers,
accelerate, peft (and numpy, pandas, pydantic, yaml); never pgrpo.stages,
pgrpo.tracking, prefect, mlflow, dvc or pandera (tests/test_layers.py).
"""

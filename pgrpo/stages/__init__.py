"""The pipeline's stages and what they need: data and schemas, groups, the reward
model, evaluation and its reports, the mechanism experiment. Imports pgrpo.core,
never pgrpo.tracking or the orchestration above it (tests/test_layers.py).
"""

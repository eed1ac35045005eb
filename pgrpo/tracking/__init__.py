"""Where runs are recorded: MLflow runs, per-step metrics, logged and registered
models, provenance tags. Imports pgrpo.core and pgrpo.stages (tests/test_layers.py).
"""

"""The pipeline's stages, one room each, and the table that describes them:

    data/        prepare: the sources (synthetic personas, files, MovieLens), schemas
    groups/      assign_groups: labels, clustering, the Bradley-Terry mixture
    reward/      train_reward: the group-conditioned reward model and its features,
                 the policy pairs, the training rewards the trainer can resolve
    evaluation/  evaluate: judge, policy measures, metrics, reward-signal check,
                 report and figures
    registry.py  every stage's params, inputs and outputs, said once

Imports pgrpo.core, never pgrpo.tracking or anything above it (tests/test_layers.py).
"""

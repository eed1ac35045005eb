"""The train_reward stage and the rewards a policy trains on.

    train_reward.py       the stage: Bradley-Terry training of the group-conditioned model
    reward_model.py       the model (MiniLM embedding + surface features -> per-group heads)
    encoder.py            MiniLM loading and pooling (also read by assign_groups)
    surface.py            token counts and length bumps, what a pooled embedding drops
    policy_pairs.py       extra pairs between the base policy's own samples
    training_rewards.py   the judge and a reward-model folder registered as training rewards
"""

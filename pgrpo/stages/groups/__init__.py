"""The assign_groups stage: every user's preference group, from labels, from clustering
what they preferred (k-means, GMM, a Bradley-Terry mixture), or at random.

    assign_groups.py   the stage (AssignConfig, assign_groups)
    bt_mixture.py      the mixture of Bradley-Terry models fitted by EM
"""

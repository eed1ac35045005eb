"""The training rewards that need the stage layer: the judge and a trained reward model.

Importing this module registers them with the trainer's resolver
(pgrpo.core.rewards.resolve_reward), so `policy.reward` may name either:

    judge           the persona utility itself (pgrpo.stages.evaluation.judge), read from the judge
                    table the prepare stage wrote beside the prompt table
    <a folder>      a reward model saved by train_reward (pgrpo.stages.reward.reward_model),
                    scoring for the run's groups, on the run's device

    import pgrpo.stages.reward.training_rewards  # noqa: F401  (pgrpo.orchestration.pipeline and pgrpo.train do)
"""

from __future__ import annotations

from pathlib import Path

from pgrpo.core.rewards import register_reward_source


def _judge(name: str, prompts_path: str, group_names: list[str], device):
    from pgrpo.core.io import read_table
    from pgrpo.stages.evaluation.judge import JudgeReward

    return JudgeReward(read_table(Path(prompts_path).parent / "judge.parquet"))


def _reward_model(name: str, prompts_path: str, group_names: list[str], device):
    from pgrpo.stages.reward.reward_model import GroupRewardFn

    return GroupRewardFn(name, group_names, device=device)


register_reward_source(lambda name: name == "judge", _judge)
register_reward_source(lambda name: Path(name).is_dir(), _reward_model)

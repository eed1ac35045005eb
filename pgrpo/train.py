"""Command line for the train_policy stage.

    python -m pgrpo.train                                # params.yaml, section `policy`
    python -m pgrpo.train --algorithm grpo               # `policy` + `algorithms.grpo` of params.yaml
    python -m pgrpo.train --advantage grpo --steps 5     # any field of PolicyConfig
    python -m pgrpo.train --model tiny-random-llama --steps 3 --output_dir /tmp/run
    accelerate launch -m pgrpo.train                     # multi-GPU, no code change

Interrupted runs resume from the last checkpoint in the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys

from pgrpo.core import paths
from pgrpo.core.config import PolicyConfig, add_config_args, config_overrides, policy_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="P-GRPO / GRPO policy training",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--algorithm", default=None, help="entry of `algorithms` in the params file")
    parser.add_argument("--output_dir", default=None,
                        help="run folder (default: models/policy/<algorithm or advantage>)")
    pre = argparse.ArgumentParser(add_help=False)  # which params file, before --help prints
    pre.add_argument("--params", default="params.yaml")
    pre.add_argument("--algorithm", default=None)
    known, _ = pre.parse_known_args(argv)
    try:  # the help shows what a run without the flag uses: the params file's values
        current = policy_config(known.params, known.algorithm)
    except (ValueError, FileNotFoundError):
        current = None  # reported below, once the arguments are parsed
    add_config_args(parser, PolicyConfig, current, f"from {known.params}")
    args = parser.parse_args(argv)
    try:
        cfg = policy_config(args.params, args.algorithm, config_overrides(args, PolicyConfig))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import pgrpo.stages.reward.training_rewards  # noqa: F401 - the judge / reward-model rewards
    from pgrpo.core.trainer import train_policy  # heavy imports after the arguments are checked

    result = train_policy(cfg, args.output_dir or paths.policy_dir(args.algorithm or cfg.advantage))
    print(json.dumps({"model_dir": str(result.model_dir), "step": result.step}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

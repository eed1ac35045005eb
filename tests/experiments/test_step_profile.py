"""benchmarks/step_profile.py: the floor of the default's work, summed from phase floors; and
the baseline paths it (and tune.py --baseline_paths) measures against still train a step.

    python -m pytest -q tests/experiments/test_step_profile.py

The phase floors are made by hand, so the sums below are checked against arithmetic done
here, not against the function's own formula.
"""

import importlib.util
import math
from pathlib import Path

import pytest

from pgrpo.core.config import PolicyConfig
from pgrpo.stages.evaluation.eval_config import EvalConfig

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("step_profile", REPO / "benchmarks/step_profile.py")
step_profile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(step_profile)
spec = importlib.util.spec_from_file_location("baseline_paths", REPO / "benchmarks/baseline_paths.py")
baseline_paths = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline_paths)


def floors_printed(capsys) -> dict[str, float]:
    lines = capsys.readouterr().out.splitlines()
    return {k: float(v) for k, v in (ln.split("=") for ln in lines if "_floor_min=" in ln)}


def test_run_floors_scale_the_profiled_evaluation_to_the_stage(capsys):
    # profiled at 4 test prompts a group; the stage has 16 (x4) and validation 8 x 2 = 16
    # samples a group against the test's 16 x 4 = 64 (x1/4 of the sampling)
    phase = {"sampling": 10.0, "KL to the base": 8.0, "judge": 0.0, "learned reward": 1.0,
             "neutral text": 0.5, "reward-signal check": 0.0}
    cfg = PolicyConfig(steps=8)
    ev = EvalConfig(prompts_per_group=16, samples_per_prompt=4, val_prompts_per_group=8,
                    val_samples_per_prompt=2)
    step_profile.run_floors(cfg, ev, n_algorithms=2, step_floor=20.0, eval_floor=phase,
                            per_group=4)
    got = floors_printed(capsys)
    training = 2 * 8 * 20.0                    # 320 s
    base = 4 * (10.0 + 1.0 + 0.5)              # 46 s: no KL for the base itself
    policy = 4 * (10.0 + 8.0 + 1.0 + 0.5)      # 78 s
    validation = 4 * 10.0 / 4                  # 10 s of sampling a policy, the base's too
    assert got["train_and_eval_floor_min"] == pytest.approx(
        (training + base + 2 * policy + 3 * validation) / 60, abs=0.005)
    assert got["comparison_seed_floor_min"] == pytest.approx(
        (training + 2 * (policy + validation)) / 60, abs=0.005)



def test_the_baseline_paths_train_a_step_of_todays_trainer(tmp_path, tiny_cfg):
    """They replace the trainer's sampling and forward by patching its names, so a change to
    how the trainer calls them breaks them (it did once: the `draws` argument); a step must
    run on them, on the old code, and the trainer's own must be back afterwards."""
    import pgrpo.core.trainer as trainer_module
    from pgrpo.core.trainer import Trainer

    trainer = Trainer(tiny_cfg(steps=1), tmp_path)
    with baseline_paths.baseline_paths():
        assert trainer_module.generate is baseline_paths.hf_generate
        metrics = trainer.train_step()
    assert metrics["train/completion_tokens"] > 0
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert trainer_module.generate is not baseline_paths.hf_generate

"""Each policy's evaluation cached and reused (pgrpo.stages.evaluation.eval_cache): across
runs while nothing it depends on changes, and after a kill, where only the policies not yet
measured are measured again.

    .venv/bin/python -m pytest -q tests/stages/test_eval_cache.py

Runs on test_evaluate's fixture (the real tiny pipeline: prepare -> assign_groups ->
train_reward -> train_policy for pgrpo and grpo -> evaluate), made again for this module.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from test_evaluate import ALGS, eval_cfg, policy_cfg, run  # noqa: F401 - run: the fixture

from pgrpo.stages.evaluation import eval_cache
from pgrpo.stages.evaluation.evaluate import evaluate


class Killed(Exception):
    """Stands for the kill of the stage's process at that point."""


def _count_measures(monkeypatch, fail_on_policy: int | None = None) -> list:
    """Record each measure_policy call's base model (None: the base is being measured);
    with `fail_on_policy` n, the n-th trained policy's measurement dies (a killed stage)."""
    from pgrpo.stages.evaluation import evaluate as ev

    measured, real = [], ev.measure_policy

    def measure(*a, **k):
        measured.append(a[2])
        if fail_on_policy is not None and sum(b is not None for b in measured) == fail_on_policy:
            raise Killed("killed while measuring a policy")
        return real(*a, **k)

    monkeypatch.setattr(ev, "measure_policy", measure)
    return measured


def test_each_evaluation_is_reused_only_under_the_same_inputs_settings_and_code(
        run, tmp_path, monkeypatch):  # noqa: F811 - the imported fixture
    """With a code fingerprint every policy's record is cached: a second evaluation reads
    them (nothing is sampled again) and writes the same report; other code, another sampling
    seed or an edited judge table is a new key; without a fingerprint nothing is cached."""
    tmp, results = run
    monkeypatch.setenv("PGRPO_CACHE", str(tmp_path / "cache"))
    measured = _count_measures(monkeypatch)

    def again(out: str, fingerprint, **cfg):
        measured.clear()
        res = evaluate(eval_cfg(**cfg), policy_cfg(tmp), ALGS, tmp / "data", tmp / "reward",
                       tmp / "policy", tmp_path / out, fingerprint=fingerprint)
        return res, len(measured)  # how many policies (the base among them) were measured

    code = {"code": {"pgrpo/x.py": "1"}}
    first, runs = again("r1", code)
    assert runs == 3 and len(list((tmp_path / "cache" / "policy_eval").glob("*.json"))) == 3
    second, runs = again("r2", code)
    assert runs == 0 and second == first == json.loads(json.dumps(results))
    assert (tmp_path / "r2" / "samples.jsonl").read_bytes() == \
        (tmp / "reports" / "samples.jsonl").read_bytes()
    assert again("r3", {"code": {"pgrpo/x.py": "2"}})[1] == 3   # other code
    assert again("r4", code, seed=7)[1] == 3                    # another sampling seed
    assert again("r5", code, n_boot=50)[1] == 0                 # intervals only: reused
    assert again("r6", None)[1] == 3 and again("r7", None)[1] == 3  # no fingerprint: no cache
    key = eval_cache.base_key(eval_cfg(), policy_cfg(tmp), tmp / "data", tmp / "reward", code)
    judge = pd.read_parquet(tmp / "data" / "judge.parquet")
    changed = tmp_path / "data"
    shutil.copytree(tmp / "data", changed)
    judge.iloc[:-1].to_parquet(changed / "judge.parquet", index=False)
    assert eval_cache.base_key(eval_cfg(), policy_cfg(tmp), changed, tmp / "reward", code) != key
    # A trained policy's record is also keyed by its own files, and needs the base's key.
    policies = [eval_cache.policy_key(key, tmp / "policy" / a / "model") for a in ALGS]
    assert len({key, *policies}) == 3 and eval_cache.policy_key(None, tmp / "policy") is None


def test_a_killed_evaluation_measures_again_only_what_it_had_not_finished(
        run, tmp_path, monkeypatch):  # noqa: F811 - the imported fixture
    """The stage dies while measuring its second trained policy; the rerun measures that
    policy alone (the base and the first are read back) and writes the uninterrupted run's
    outputs. The dead run leaves no record of the policy it was measuring."""
    tmp, results = run
    monkeypatch.setenv("PGRPO_CACHE", str(tmp_path / "cache"))
    code = {"code": {"pgrpo/x.py": "1"}}
    args = (policy_cfg(tmp), ALGS, tmp / "data", tmp / "reward", tmp / "policy")
    _count_measures(monkeypatch, fail_on_policy=2)
    with pytest.raises(Killed):
        evaluate(eval_cfg(), *args, tmp_path / "out", fingerprint=code)
    assert len(list((tmp_path / "cache" / "policy_eval").glob("*"))) == 2  # base, first policy
    assert not (tmp_path / "out" / "metrics.json").exists()
    measured = _count_measures(monkeypatch)
    rerun = evaluate(eval_cfg(), *args, tmp_path / "out", fingerprint=code)
    assert len(measured) == 1 and measured[0] is not None  # one trained policy, not the base
    assert rerun == json.loads(json.dumps(results))
    assert (tmp_path / "out" / "samples.jsonl").read_bytes() == \
        (tmp / "reports" / "samples.jsonl").read_bytes()

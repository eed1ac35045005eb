"""pgrpo.experiments.compare_record: a seed that comes back as files gets its MLflow runs again.

    python -m pytest -q tests/experiments/test_compare_record.py

On a real tiny comparison logged to a real MLflow store (test_compare's fixture, conftest's
store): the store is lost, the seed's files stay, and the runs recorded from them carry the
tags, params and metrics the comparison logged live; what the store holds is not recorded twice.
"""

import shutil
from pathlib import Path

import pytest
import yaml
from test_compare import tiny_pipeline  # noqa: F401 - the fixture

TAGS = ("pgrpo.compare", "pgrpo.seed", "pgrpo.stage", "pgrpo.algorithm")


def histories(client, run, names: int = 5) -> dict:
    """Every step of a run's first few metrics (by name)."""
    return {n: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, n)]
            for n in sorted(run.data.metrics)[:names]}


def comparison_runs(client) -> dict:
    """{(seed, stage, algorithm): run} of the store's comparison stage runs."""
    exp = client.get_experiment_by_name("pgrpo")
    runs = client.search_runs([exp.experiment_id], "tags.`pgrpo.seed` != ''") if exp else []
    return {tuple(r.data.tags.get(t) for t in TAGS[1:]): r for r in runs}


def test_a_seed_restored_from_files_is_recorded_as_it_was_logged(store, tiny_pipeline, empty_db):  # noqa: F811
    from pgrpo.experiments.compare import main
    from pgrpo.experiments.compare_record import RECORDED_FROM, record_seeds

    with pytest.raises(ValueError, match="tracking is off"):  # the fixture's params
        record_seeds("params.yaml")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["tracking"] = {"enabled": True}
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["--params", "params.yaml", "--seeds", "0"]) == 0
    live = comparison_runs(store)
    assert set(live) == {("0", "train_policy", "grpo"), ("0", "train_policy", "pgrpo"),
                         ("0", "evaluate", None)}
    assert record_seeds("params.yaml") == []  # the store holds every run: nothing recorded
    steps = {key: histories(store, run) for key, run in live.items()}
    assert len(next(iter(steps[("0", "train_policy", "grpo")].values()))) > 1
    # the machine is lost with its store; the seed's files come back (an archive)
    shutil.copy(empty_db, "mlflow.db")
    assert comparison_runs(store) == {}
    assert record_seeds("params.yaml") == ["seed0/grpo", "seed0/pgrpo", "seed0/evaluate"]
    again = comparison_runs(store)
    assert set(again) == set(live)
    for key, run in again.items():
        before = live[key]
        assert run.data.tags["pgrpo.compare"] == before.data.tags["pgrpo.compare"] == "compare"
        assert run.data.tags["pgrpo.recorded_from"] == RECORDED_FROM["pgrpo.recorded_from"]
        assert run.data.params == before.data.params, key
        assert run.data.metrics == before.data.metrics and run.data.metrics, key
        assert histories(store, run) == steps[key], key  # every step, not only the last
    assert record_seeds("params.yaml") == []  # once recorded, left alone

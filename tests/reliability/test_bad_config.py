"""Fault injection: a params file with several mistakes (issue 15).

Every stage validates the whole file before any work, so `dvc repro` fails at `prepare`
on a typo in `evaluate` (not after hours of training), with one message that lists every
problem, and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pgrpo.core.config import read_params
from pgrpo.orchestration.pipeline import main, run_stage

REPO = Path(__file__).resolve().parents[2]


def test_every_problem_is_listed_at_once_before_any_stage_runs(tmp_path, monkeypatch, capsys):
    params = read_params(REPO / "configs" / "smoke.yaml")
    params["algorithms"]["pgrpo"]["lr"] = -1.0         # out of range
    params["evaluate"]["samples_per_promt"] = 4        # misspelt key, in a later stage's section
    params["algorithms"]["pgrpo"]["min_count"] = 0     # out of range
    params["algorithms"]["grpo"]["num_generations"] = 1  # GRPO with G = 1 learns nothing
    params["polcy"] = {"steps": 3}                     # misspelt section
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as e:
        run_stage("prepare", path)
    msg = str(e.value)
    for needed in ("unknown section 'polcy'", "section 'policy + algorithms.pgrpo'", "lr",
                   "section 'policy + algorithms.grpo'",
                   "section 'evaluate'", "samples_per_promt", "min_count",
                   "num_generations=1 with advantage 'grpo'", "nothing was run"):
        assert needed in msg, (needed, msg)
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()
    assert main(["prepare", "--params", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "problem(s)" in err and "Traceback" not in err


def test_wrong_types_and_a_prompt_table_without_the_reward_s_columns(tmp_path, monkeypatch):
    """A string where a number belongs, and prompts that lack the judge's user_id column:
    both named before any work (the table is checked once it exists)."""
    table = tmp_path / "prompts.csv"
    table.write_text("prompt,group\nrecommend a song,casual\n")
    params = read_params(REPO / "configs" / "smoke.yaml")
    params["policy"].update(steps="ten", prompts=str(table), groups=None, reward="judge")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as e:
        run_stage("train_policy", path, algorithm="grpo")
    msg = str(e.value)
    assert "steps" in msg and "valid integer" in msg, msg
    params["policy"]["steps"] = 3
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError) as e:
        run_stage("train_policy", path, algorithm="grpo")
    msg = str(e.value)
    assert f"prompt table {table} lacks columns ['user_id']" in msg, msg
    assert "reward 'judge' reads ['user_id']" in msg and msg.count("lacks columns") == 1
    assert not (tmp_path / "models").exists()


def test_a_stage_command_names_bad_input_in_one_line_and_exits_by_kind(tmp_path, capsys):
    """`python -m pgrpo.stages.data.prepare` (the other stage commands share its shape,
    pgrpo.core.config.run_stage_command): a bad flag exits 2 and a missing input file 1, each
    with one line and nothing written; a run prints its result as one JSON line. A bug is not
    bad input: it keeps its traceback."""
    import json

    from pgrpo.core.config import run_stage_command
    from pgrpo.stages.data import prepare

    out = tmp_path / "processed"
    no_params = str(tmp_path / "none.yaml")
    assert prepare.main(["--params", no_params, "--out_dir", str(out), "--n_users", "-3"]) == 2
    assert "n_users" in capsys.readouterr().err and not out.exists()
    missing = tmp_path / "nope.jsonl"
    assert prepare.main(["--params", no_params, "--out_dir", str(out), "--source", "file",
                         "--path", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and err.count("\n") == 1
    assert not out.exists()
    assert prepare.main(["--params", no_params, "--out_dir", str(out), "--n_users", "30"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and json.loads(printed[0])["users"]["total"] == 30

    def buggy(cfg):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_stage_command(lambda: None, buggy)

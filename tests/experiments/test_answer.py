"""The README's answer to issue 25 (benchmarks/llm_compare/answer.py), from summaries made by
the comparison's own summarize_runs on hand-made runs whose verdicts are known by hand.

    python -m pytest -q tests/experiments/test_answer.py
"""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from test_compare_summary import _runs

from pgrpo.experiments.compare_summary import summarize_runs

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("answer", REPO / "benchmarks/llm_compare/answer.py")
answer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(answer)

# pgrpo - grpo in the minority groups per seed: clearly positive, about zero, clearly negative
GAINS = {"supported": [0.2, 0.21, 0.19], "equivalent": [0.01, -0.01, 0.0],
         "contradicted": [-0.2, -0.21, -0.19], "not resolved": [0.3, -0.1, 0.05]}


def _summary(kind: str) -> dict:
    return summarize_runs(_runs(GAINS[kind]), margin=0.05)


@pytest.mark.parametrize("kind", list(GAINS))
def test_the_paragraph_follows_the_registered_mapping(kind):
    s = _summary(kind)
    assert s["answer"] == kind  # the hand-made runs give the verdict they were made for
    text = answer.render([("the judge", s, [0, 1, 2]), ("the learned reward", s, [0, 1, 2])])
    expected = answer.USE[kind].format(margin=0.05, seeds=next(
        c for c in s["claims"] if c["metric"] == "mean_reward"
        and c["difference"] == "pgrpo - grpo")["seeds_to_resolve"])
    assert f"With the judge: {expected}" in text
    assert f"With the learned reward: {expected}" in text
    assert "Partial" not in text
    # the primary endpoint's row carries the estimate and verdict of the summary's claim
    assert "| (primary) mean judge reward over groups (the answer) | grpo | " in text
    assert f"| **{kind}** |" in text


def test_the_ablation_says_why_and_the_rows_hold_the_intervals():
    s = _summary("supported")  # random groups equal grpo here: pgrpo beats them by the gain
    text = answer.render([("the judge", s, [0, 1, 2])])
    assert answer.WHY["supported"] in text
    claim = next(c for c in s["claims"] if c["difference"] == "pgrpo - pgrpo_random")
    assert (f"| against random groups (is the grouping what differs?) | pgrpo_random | "
            f"{claim['mean']:+.3f} [{claim['ci_low']:+.3f}, {claim['ci_high']:+.3f}] | "
            "**supported** | – |") in text


def test_a_partial_comparison_is_flagged_and_gets_no_paragraph():
    s = _summary("supported")  # 3 runs where 10 seeds are registered
    text = answer.render([("the judge", s, list(range(10)))])
    assert "Partial: 3 of the 10 registered seeds" in text
    assert "Not yet: the comparison has not run all its seeds." in text
    assert answer.USE["supported"] not in text


def test_main_reads_both_presets_and_names_a_missing_summary(tmp_path, monkeypatch, capsys):
    for f in ("params.yaml", "configs/claim.yaml", "configs/claim_judge.yaml"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no reports/compare/claim_judge/summary.json"):
        answer.main([])
    for name, kind in (("claim_judge", "equivalent"), ("claim_learned", "contradicted")):
        out = tmp_path / "reports/compare" / name
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps(_summary(kind)))
    answer.main(["--out", str(tmp_path / "answer.md")])
    text = (tmp_path / "answer.md").read_text()
    # the presets register ten seeds; three hand-made runs are a partial result
    assert text.count("Partial: 3 of the 10 registered seeds") == 2
    assert text.index("the judge as training reward") < text.index("the learned reward model")


def test_the_movielens_task_reads_its_own_presets(tmp_path, monkeypatch):
    for f in ("params.yaml", "configs/movielens.yaml", "configs/claim_movielens.yaml",
              "configs/claim_movielens_judge.yaml"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no reports/compare/claim_ml_judge/summary.json"):
        answer.main(["--task", "movielens"])
    for name in ("claim_ml_judge", "claim_ml_learned"):
        out = tmp_path / "reports/compare" / name
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps(_summary("supported")))
    answer.main(["--task", "movielens", "--out", str(tmp_path / "answer.md")])
    text = (tmp_path / "answer.md").read_text()
    assert text.startswith("### P-GRPO against GRPO on MovieLens 100K")
    assert text.index("held-out liked movies") < text.index("later liked vs disliked")
    assert text.count("Partial: 3 of the 10 registered seeds") == 2

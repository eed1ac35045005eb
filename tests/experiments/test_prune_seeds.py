"""benchmarks/llm_compare/prune_seeds.py: what an evaluated comparison seed can lose, and what not.

    python -m pytest -q tests/experiments/test_prune_seeds.py

On a real tiny comparison (test_compare's fixture): the checkpoints and weights go, the
summary and training curves stay, an archived seed comes back after the machine is lost,
and a deleted policy retrains to the same bytes.
"""

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from test_compare import tiny_pipeline  # noqa: F401 - the fixture

from pgrpo.experiments.compare import load_compare

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("prune_seeds", REPO / "benchmarks/llm_compare/prune_seeds.py")
prune_seeds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prune_seeds)


def test_a_pruned_seed_keeps_its_summary_and_retrains_bit_for_bit(tiny_pipeline, capsys):  # noqa: F811
    """benchmarks/llm_compare/prune_seeds.py (the pre-registered comparison's disk): an
    evaluated seed loses its checkpoints and weights, not its summary or training curves,
    and a deleted policy comes back from its seed with the same bytes."""
    from pgrpo.experiments.compare import COMPARE_REPORTS, main, mean_curves, seed_dirs

    assert main(["--params", "params.yaml", "--seeds", "0"]) == 0
    assert prune_seeds.seed_folders("") == [(seed_dirs(0)[0], seed_dirs(0)[1])]
    kept = Path("kept")
    shutil.copytree(seed_dirs(0)[0], kept)  # what the run left, to compare with a retraining
    summary_before = json.loads((COMPARE_REPORTS / "summary.json").read_text())
    archive = Path("elsewhere")  # a folder that outlives the machine
    assert prune_seeds.main(["", "--weights", "--archive", str(archive)]) == 0
    root = seed_dirs(0)[0]
    assert not list(root.rglob("checkpoints")) and not list(root.rglob("*.safetensors"))
    assert (root / "grpo" / "metrics.jsonl").read_text() == (kept / "grpo" / "metrics.jsonl").read_text()
    marker = json.loads((root / prune_seeds.PRUNED).read_text())
    assert marker["weights_removed"] and marker["freed_bytes"] > 0
    assert "grpo/checkpoints" in marker["removed"] and "pgrpo/model/model.safetensors" in marker["removed"]
    # the summary over the pruned seed is unchanged, training curves included
    assert main(["--params", "params.yaml", "--seeds", "0", "--summarize-only"]) == 0
    summary = json.loads((COMPARE_REPORTS / "summary.json").read_text())
    assert summary == summary_before
    curves = mean_curves(load_compare("params.yaml"))
    assert set(curves) == {"grpo", "pgrpo"} and all(curves.values())
    # the machine is lost: only the archive is left, and the restored seed summarizes the same
    assert (archive / root / prune_seeds.PRUNED).is_file()
    assert not list((archive / "models/compare").rglob("*.safetensors"))  # weights: the reward model's alone
    assert not list((archive / "models/compare").rglob("model"))  # a policy without weights: not kept
    reward_before = {f.name: f.read_bytes() for f in Path("models/reward").iterdir()}
    for lost in (root, seed_dirs(0)[1], Path("models/reward"), Path("data/processed")):
        shutil.rmtree(lost)
    assert prune_seeds.main(["", "--restore", str(archive)]) == 0
    assert {f.name: f.read_bytes() for f in Path("models/reward").iterdir()} == reward_before
    assert (root / prune_seeds.PRUNED).read_text() == json.dumps(marker, indent=2)
    assert main(["--params", "params.yaml", "--seeds", "0", "--summarize-only"]) == 0
    assert json.loads((COMPARE_REPORTS / "summary.json").read_text()) == summary_before
    assert prune_seeds.restore_seeds("", archive) == []  # nothing lacking: nothing copied
    # a checkout whose reward model is another one (retrained) is refused, and left as it is
    with open("models/reward/metrics.json", "a") as f:
        f.write(" ")
    with pytest.raises(SystemExit, match="models/reward differs"):
        prune_seeds.main(["", "--restore", str(archive)])
    assert Path("models/reward/metrics.json").read_bytes() == reward_before["metrics.json"] + b" "
    Path("models/reward/metrics.json").write_bytes(reward_before["metrics.json"])
    # each archived seed names the input files it trained on
    recorded = json.loads((archive / root / prune_seeds.INPUTS_RECORD).read_text())
    assert {k: v for k, v in recorded.items() if k.startswith("models/reward/")} == {
        f"models/reward/{n}": hashlib.sha256(b).hexdigest() for n, b in reward_before.items()}
    assert any(k.startswith("data/processed/") for k in recorded)
    # the copy kept in git has no reward model: on a new machine, whose retrained one differs
    # in its last bits, the seeds come back and the checkout's reward model stays for the rest
    in_git = Path("in_git")
    shutil.copytree(archive, in_git, ignore=lambda d, names: ["reward"] if Path(d).name == "models" else [])
    assert not (in_git / "models/reward").exists() and (in_git / "data/processed").is_dir()
    for lost in (root, seed_dirs(0)[1]):
        shutil.rmtree(lost)
    with open("models/reward/metrics.json", "a") as f:
        f.write(" ")  # another machine's retraining
    capsys.readouterr()
    assert prune_seeds.main(["", "--restore", str(in_git)]) == 0
    assert "holds no models/reward" in capsys.readouterr().err
    assert Path("models/reward/metrics.json").read_bytes() == reward_before["metrics.json"] + b" "
    assert (root / prune_seeds.PRUNED).read_text() == json.dumps(marker, indent=2)
    assert json.loads((root / prune_seeds.INPUTS_RECORD).read_text()) == recorded
    assert main(["--params", "params.yaml", "--seeds", "0", "--summarize-only"]) == 0
    assert json.loads((COMPARE_REPORTS / "summary.json").read_text()) == summary_before
    Path("models/reward/metrics.json").write_bytes(reward_before["metrics.json"])
    # pruning again frees nothing more and leaves the record of what went as it was (so the
    # archive, which compares records, does not copy the seed again)
    record = (root / prune_seeds.PRUNED).read_bytes()
    assert prune_seeds.main(["", "--weights", "--archive", str(archive)]) == 0
    assert (root / prune_seeds.PRUNED).read_bytes() == record
    assert prune_seeds.archive_seeds("", archive) == []
    # without the marker, the comparison retrains the seed: the same weights, bit for bit
    (root / prune_seeds.PRUNED).unlink()
    assert main(["--params", "params.yaml", "--seeds", "0"]) == 0
    for alg in ("grpo", "pgrpo"):
        got = (root / alg / "model" / "model.safetensors").read_bytes()
        assert got == (kept / alg / "model" / "model.safetensors").read_bytes(), alg

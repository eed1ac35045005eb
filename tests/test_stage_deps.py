"""Every module a DVC stage runs is among that stage's deps in dvc.yaml.

A stage whose code is not a dep can change its output while `dvc repro` says "up to
date" (issue 14: the judge's utilities were no dep of evaluate). pgrpo.stage_code
computes the code a stage runs from the imports; this checks dvc.yaml against it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pgrpo.pipeline import STAGES
from pgrpo.stage_code import stage_code

REPO = Path(__file__).resolve().parents[1]


def _covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", STAGES)
def test_every_module_a_stage_runs_is_a_dep(stage):
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("do", spec)["deps"]]
    missing = sorted(p.as_posix() for p in stage_code(stage) if not _covered(p.as_posix(), deps))
    assert not missing, f"dvc.yaml, stage {stage}: code it runs is not a dep: {missing}"


def test_the_code_includes_lazy_imports_and_leaves_out_tracking():
    code = {p.as_posix() for p in stage_code("evaluate")}
    # evaluate imports the judge inside functions; its utilities live in pgrpo/data
    assert {"pgrpo/judge.py", "pgrpo/data/personas.py", "pgrpo/evaluate.py",
            "pgrpo/pipeline.py", "pgrpo/__init__.py"} <= code
    assert "pgrpo/mlflow_models.py" not in code  # only under `if track`
    assert "pgrpo/trainer.py" not in {p.as_posix() for p in stage_code("prepare")}
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        stage_code("train")

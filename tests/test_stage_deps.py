"""Every module a DVC stage runs is among that stage's deps in dvc.yaml.

A stage whose code is not a dep can change its output while `dvc repro` says "up to
date" (issue 14: the judge's utilities were no dep of evaluate). The code a stage runs
is computed, not listed: the `pgrpo` imports of `pgrpo.pipeline`'s module level, of the
stage's branch of `stage_configs` and of its runner, then every `pgrpo` import of those
modules (at any level, lazy imports included), transitively. Imports under `if track`
only record to MLflow, which changes no output, so they are left out (as the `tracking`
params section is).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import yaml

from pgrpo import pipeline

REPO = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    """pgrpo.a.b -> pgrpo/a/b.py or pgrpo/a/b/__init__.py (None: not our code)."""
    if name != "pgrpo" and not name.startswith("pgrpo."):
        return None
    base = REPO / Path(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.exists():
            return f
    return None


def _imports(tree: ast.AST, skip_tracking: bool = False) -> set[str]:
    """Module names imported in `tree` (`from pgrpo import x` counts pgrpo.x when it is one)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if skip_tracking and isinstance(node, ast.If) and "track" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _closure(roots: set[str]) -> set[Path]:
    files: set[Path] = set()
    todo = [f for f in map(_module_file, roots) if f]
    while todo:
        f = todo.pop()
        if f in files:
            continue
        files.add(f)
        parts = f.relative_to(REPO).with_suffix("").parts
        for pkg_init in [REPO / Path(*parts[:i]) / "__init__.py" for i in range(1, len(parts))]:
            if pkg_init.exists():
                todo.append(pkg_init)  # importing a.b runs a/__init__.py
        names = _imports(ast.parse(f.read_text()))
        todo += [m for m in map(_module_file, names) if m and m not in files]
    return files


def _config_branch_imports(stage: str) -> set[str]:
    """Imports in the branch of pipeline.stage_configs that handles `stage`."""
    fn = ast.parse(inspect.getsource(pipeline.stage_configs)).body[0]
    node = next(n for n in fn.body if isinstance(n, ast.If))
    while isinstance(node, ast.If):
        if f"'{stage}'" in ast.unparse(node.test):
            return _imports(ast.Module(body=node.body, type_ignores=[]))
        node = node.orelse[0] if len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If) \
            else ast.Module(body=node.orelse, type_ignores=[])
    return _imports(node)  # the final else: the last stage


def stage_code(stage: str) -> set[Path]:
    """The files of the code `python -m pgrpo.pipeline <stage>` runs, tracking left out."""
    top = set()  # pgrpo.pipeline's module-level imports run for every stage
    for node in ast.parse(Path(pipeline.__file__).read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top |= _imports(node)
    runner = _imports(ast.parse(inspect.getsource(pipeline.RUNNERS[stage])), skip_tracking=True)
    return _closure(top | _config_branch_imports(stage) | runner) | {Path(pipeline.__file__)}


def _covered(f: Path, deps: list[str]) -> bool:
    rel = f.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", pipeline.STAGES)
def test_every_module_a_stage_runs_is_a_dep(stage):
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("do", spec)["deps"]]
    missing = sorted(f.relative_to(REPO).as_posix() for f in stage_code(stage)
                     if not _covered(f, deps))
    assert not missing, f"dvc.yaml, stage {stage}: code it runs is not a dep: {missing}"


def test_the_closure_finds_lazy_imports():
    """evaluate imports the judge inside functions; the closure must still see it."""
    code = {f.relative_to(REPO).as_posix() for f in stage_code("evaluate")}
    assert {"pgrpo/judge.py", "pgrpo/data/personas.py", "pgrpo/evaluate.py"} <= code
    assert "pgrpo/mlflow_models.py" not in code  # only under `if track`

"""The code a pipeline stage runs: the files of every `pgrpo` module it imports.

Computed, not listed, from the source (lazy imports inside functions included):
`pgrpo.orchestration.pipeline`'s module-level imports, the stage's branch of `stage_configs`, its
runner, then every `pgrpo` import of those modules, transitively. Imports under
`if track` only record to MLflow, which changes no output, and are left out (as is the
`tracking` params section). Two readers: tests/stages/test_stage_registry.py checks dvc.yaml's
deps against it, and pgrpo.orchestration.stage_key hashes it into the key of a stage's result (the
Prefect tasks' cache, a comparison's evaluations), so no cache can serve a result the
current code did not produce.

The runner module is read as source, never imported: pgrpo.orchestration.pipeline itself
asks pgrpo.orchestration.stage_key (and so this module) for the code of train_policy, to
fingerprint its checkpoints, and an import back would close a circle.

    from pgrpo.orchestration.stage_code import stage_code
    sorted(p.as_posix() for p in stage_code("evaluate"))   # ['pgrpo/__init__.py', ...]
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from pgrpo.stages.registry import NAMES

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the pgrpo package
RUNNER_MODULE = "pgrpo.orchestration.pipeline"  # stage_configs, RUNNERS: what each stage runs


def _module_file(name: str) -> Path | None:
    """pgrpo.a.b -> pgrpo/a/b.py or pgrpo/a/b/__init__.py (None: not our code)."""
    if name != "pgrpo" and not name.startswith("pgrpo."):
        return None
    base = ROOT / Path(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.exists():
            return f
    return None


def imports(tree: ast.AST, skip_tracking: bool = False) -> set[str]:
    """Module names imported anywhere in `tree` (`from pgrpo import x` also counts pgrpo.x)."""
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


def closure(modules: set[str]) -> set[Path]:
    """Files of `modules` and of everything they import from pgrpo, packages' __init__ too."""
    files: set[Path] = set()
    todo = [f for f in map(_module_file, modules) if f]
    while todo:
        f = todo.pop()
        if f in files:
            continue
        files.add(f)
        parts = f.relative_to(ROOT).parts
        todo += [ROOT / Path(*parts[:i]) / "__init__.py" for i in range(1, len(parts))
                 if (ROOT / Path(*parts[:i]) / "__init__.py").exists()]
        todo += [m for m in map(_module_file, imports(ast.parse(f.read_text()))) if m]
    return files


def _runner_source() -> tuple[Path, ast.Module]:
    source = _module_file(RUNNER_MODULE)
    return source, ast.parse(source.read_text())


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not found:
        raise LookupError(f"{RUNNER_MODULE} defines no function {name!r}")
    return found[0]


def _runner_name(tree: ast.Module, stage: str) -> str:
    """The function RUNNERS maps `stage` to (read from RUNNERS = {...} in the source)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "RUNNERS"
                                                for t in node.targets):
            table = {k.value: v.id for k, v in zip(node.value.keys, node.value.values)}
            return table[stage]
    raise LookupError(f"{RUNNER_MODULE} has no RUNNERS table")


def _config_branch_imports(tree: ast.Module, stage: str) -> set[str]:
    """Imports in the branch of stage_configs that handles `stage`."""
    fn = _function(tree, "stage_configs")
    node = next(n for n in fn.body if isinstance(n, ast.If))
    while isinstance(node, ast.If):
        if f"'{stage}'" in ast.unparse(node.test):
            return imports(ast.Module(body=node.body, type_ignores=[]))
        rest = node.orelse
        node = rest[0] if len(rest) == 1 and isinstance(rest[0], ast.If) else \
            ast.Module(body=rest, type_ignores=[])
    return imports(node)  # the final else: the last stage


@functools.cache
def stage_code(stage: str) -> frozenset[Path]:
    """The files (relative to the repo root) of the code `python -m pgrpo.orchestration.pipeline
    <stage>` runs."""
    if stage not in NAMES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(NAMES)}")
    source, tree = _runner_source()
    top = set()  # the runner module's module-level imports run for every stage
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top |= imports(node)
    runner = imports(_function(tree, _runner_name(tree, stage)), skip_tracking=True)
    files = closure(top | _config_branch_imports(tree, stage) | runner) | {source.resolve()}
    return frozenset(f.relative_to(ROOT) for f in files)

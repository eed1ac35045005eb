"""The import contract of the package's layers, lowest first:

    pgrpo/core/           the algorithm and trainer   torch, transformers, accelerate, peft
    pgrpo/stages/         the pipeline's stages       + pgrpo.core, pandera (tables)
    pgrpo/tracking/       where runs are recorded     + pgrpo.stages, mlflow, dvc / prefect (tags)
    pgrpo/orchestration/  the stage runner, keys, locks
    pgrpo/experiments/    the comparison, the mechanism experiment
    pgrpo/*.py            the package and its CLI face (train.py)

A module may import its own layer and the layers below it, never one above; core never
imports the MLOps stack (the GPU machines have none of it), stages never prefect, mlflow
or dvc. Every import counts, also those inside functions and under TYPE_CHECKING. And no
two modules import each other, directly or round a circle: such a pair is one idea cut
badly (neither can be read, tested or moved alone). The last tests import each lower
layer in a process where the packages it must not need cannot be imported at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pgrpo.orchestration.stage_code import imports

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "pgrpo"
LAYERS = ["core", "stages", "tracking", "orchestration", "experiments", "top"]
MLOPS = ("prefect", "mlflow", "dvc", "pandera")
NEVER = {"core": MLOPS, "stages": ("prefect", "mlflow", "dvc"), "tracking": (),
         "orchestration": (), "experiments": (), "top": ()}


def layer_of_file(path: Path) -> str:
    part = path.relative_to(PKG).parts[0]
    return part if part in LAYERS[:-1] else "top"


def layer_of_module(name: str) -> str | None:
    """The layer of a pgrpo module (None: not ours); `pgrpo` itself is the top."""
    parts = name.split(".")
    if parts[0] != "pgrpo":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[:-1] else "top"


def violations() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        layer = layer_of_file(path)
        for name in sorted(imports(ast.parse(path.read_text(encoding="utf-8")))):
            rel = path.relative_to(REPO)
            if name.split(".")[0] in NEVER[layer]:
                out.append(f"{rel} ({layer}) imports {name}")
            target = layer_of_module(name)
            if name == "pgrpo" or target is None:
                continue
            if LAYERS.index(target) > LAYERS.index(layer):
                out.append(f"{rel} ({layer}) imports {name} ({target}, a higher layer)")
    return out


def test_no_module_imports_a_higher_layer_or_the_mlops_stack_below_tracking():
    found = violations()
    assert not found, "\n".join(found)


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The contract test itself can fail: a core module importing a stage is reported."""
    bad = PKG / "core" / "_contract_probe.py"
    bad.write_text("def f():\n    from pgrpo.stages.evaluation.judge import judge_scores\n    import mlflow\n")
    try:
        found = violations()
    finally:
        bad.unlink()
    assert any("_contract_probe.py (core) imports pgrpo.stages.evaluation.judge" in v for v in found), found
    assert any("_contract_probe.py (core) imports mlflow" in v for v in found), found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """pgrpo module -> the pgrpo modules it imports (`from pkg import name` counts the
    module pkg.name when there is one, else pkg)."""
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = set()
        for imported in imports(ast.parse(path.read_text(encoding="utf-8"))):
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                deps.add(imported)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_module_imports_its_own_importer():
    found = circles(import_graph())
    assert not found, "modules that import each other (round a circle):\n" + \
        "\n".join(" -> ".join(c) for c in found)


def test_the_circle_check_catches_a_circle_of_three():
    """It can fail: a -> b -> c -> a (a lazy import inside a function counts) is one circle,
    found in the real package too once written there; a chain a -> b -> c is not."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    probe_a, probe_b = PKG / "core" / "_circle_probe_a.py", PKG / "core" / "_circle_probe_b.py"
    probe_a.write_text("from pgrpo.core._circle_probe_b import g\n")
    probe_b.write_text("def g():\n    from pgrpo.core import _circle_probe_a\n")
    try:
        found = circles(import_graph())
    finally:
        probe_a.unlink()
        probe_b.unlink()
    assert ["pgrpo.core._circle_probe_a", "pgrpo.core._circle_probe_b"] in found, found


@pytest.mark.parametrize("layer", ["core", "stages"])
def test_the_lower_layers_import_without_what_they_must_not_need(layer):
    """What the GPU machines can run: every module of the layer imported with the packages
    of NEVER[layer] made unimportable (sys.modules[name] = None)."""
    modules = sorted(f"pgrpo.{layer}." + ".".join(p.relative_to(PKG / layer).with_suffix("").parts)
                     for p in (PKG / layer).rglob("*.py") if p.name != "__init__.py")
    code = ("import sys\n"
            f"for m in {NEVER[layer]!r}: sys.modules[m] = None\n"
            f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]

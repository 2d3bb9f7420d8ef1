"""The house's layering rules (DESIGN.md section 1), checked on every module's imports.

Every ``import`` and ``from ... import`` in the project's packages (``geo3d``, ``ops``, ``pipelines``,
``viewers``) and ``scripts/`` is read from the source (AST; imports inside functions count too) and resolved to
the project module it names. The rules, with no list of exceptions:

* ``ops`` imports only the ``geo3d`` core (never ``geo3d.cli``), itself and third-party libraries;
* ``viewers`` imports only the ``geo3d`` core, itself and third-party libraries;
* a pipeline never imports ``geo3d.cli``, ``scripts`` or another pipeline;
* the ``geo3d`` core imports ``pipelines`` and ``viewers`` only inside ``geo3d/cli``;
* nothing but ``scripts`` imports ``scripts``;
* a ``"package.module:function"`` string (the demo's stage table) counts as an import of that module;
* no two modules import each other, directly or through others (no cycles), package ``__init__`` files
  included.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = re.compile(r"(geo3d|ops|pipelines|viewers|scripts)(\.\w+)+:\w+")
PACKAGES = ("geo3d", "ops", "pipelines", "viewers")
PIPELINES = tuple(sorted(p.name for p in (ROOT / "pipelines").iterdir() if (p / "__init__.py").is_file()))
"""Every pipeline folder (a sixth one is held to the same shape and rules as soon as it exists)."""


def module_name(path: Path) -> str:
    """``geo3d/io/kitti.py`` -> ``geo3d.io.kitti``; ``geo3d/io/__init__.py`` -> ``geo3d.io``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_modules() -> dict[str, Path]:
    """Every project module: dotted name -> file."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    files += list((ROOT / "scripts").rglob("*.py"))
    return {module_name(p): p for p in files if "__pycache__" not in p.parts}


def resolve(name: str) -> str | None:
    """The project module an imported dotted name refers to (the longest project-module prefix), else None."""
    modules = project_modules()
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str) -> set[str]:
    """The project modules that ``module`` imports (anywhere in the file)."""
    path = project_modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a.b import c``: c may be a submodule (an edge to a.b.c) or a name in a.b (an edge to a.b)
            names = [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RUNNER.fullmatch(node.value):
            names = [node.value.partition(":")[0]]  # a "module:function" reference, imported later by name
        else:
            continue
        for name in names:
            target = resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


def layer(module: str) -> str:
    """``ops``, ``viewers``, ``scripts``, ``cli`` (geo3d.cli), ``core`` (the rest of geo3d), or ``pipelines.X``."""
    top, _, rest = module.partition(".")
    if top == "geo3d":
        return "cli" if rest == "cli" or rest.startswith("cli.") else "core"
    if top == "pipelines":
        return f"pipelines.{rest.partition('.')[0]}" if rest else "pipelines"
    return top


def allowed(source: str, target: str) -> bool:
    """Whether a module of layer ``source`` may import one of layer ``target``."""
    if source == target or target == "core":
        return True
    if source == "scripts":
        return True  # scripts sit on top: they may use any layer
    if source == "cli":
        return target in ("viewers", "ops") or target.startswith("pipelines")
    if source.startswith("pipelines"):
        return target in ("ops", "viewers") or target == "pipelines"
    if source == "core":
        return target == "ops"
    return False  # ops and viewers: only the core and themselves


def test_the_walk_sees_the_whole_project():
    assert {"depth", "detection", "simulation", "splatting", "surface"} <= set(PIPELINES)
    modules = project_modules()
    for name in ("geo3d.cli", "geo3d.io.checkpoint", "ops", "viewers.render", *(f"pipelines.{p}.module" for p in
                                                                                 PIPELINES)):
        assert name in modules, name
    assert imports_of("geo3d.cli.demo") >= {"geo3d.report", "pipelines.detection.demo", "geo3d.cli.demo_stages"}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_pipeline_has_the_one_shape(pipeline):
    folder = ROOT / "pipelines" / pipeline
    for name in ("__init__.py", "data.py", "module.py", "predict.py", "demo.py", "README.md"):
        assert (folder / name).is_file(), f"pipelines/{pipeline}/{name} is missing"


def test_layering():
    broken = []
    for module in sorted(project_modules()):
        for target in sorted(imports_of(module)):
            if not allowed(layer(module), layer(target)):
                broken.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert not broken, "layering broken:\n" + "\n".join(broken)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_find_cycles_finds_a_cycle_and_only_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_layer_rules_refuse_the_arrows_the_wrong_way():
    assert not allowed("pipelines.detection", "cli")
    assert not allowed("pipelines.detection", "pipelines.depth")
    assert not allowed("ops", "pipelines.depth") and not allowed("ops", "viewers") and not allowed("ops", "cli")
    assert not allowed("viewers", "ops") and not allowed("viewers", "pipelines.surface")
    assert not allowed("core", "viewers") and not allowed("core", "pipelines.surface")
    assert allowed("cli", "pipelines.surface") and allowed("pipelines.surface", "ops")


def test_no_import_cycles():
    graph = {module: imports_of(module) for module in project_modules()}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)

"""Import rules between layers, checked by parsing every module's imports.

Every import counts, also one made inside a function to be lazy: a lazy import
hides a cycle from Python at start-up, not from the next reader.
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE_THIRD_PARTY = {"pyroute2", "psutil"}


def module_name(path):
    """The dotted name of the module in ``path`` (a package's __init__ names the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name):
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path):
    """Yield every module ``path`` imports, by absolute dotted name.

    ``from X import Y`` yields ``X.Y`` when Y is a module of this tree (so
    ``from .. import engine`` names the engine, not just the package ``ve``),
    else ``X``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            submodules = [f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}")]
            yield from submodules
            if len(submodules) < len(node.names):
                yield module


def engine_modules():
    return {module_name(p): p for p in (ROOT / "ve").rglob("*.py")}


def test_engine_imports_only_stdlib_pyroute2_psutil():
    """ve/ is usable alone: no Django, Celery or dashboard code."""
    allowed = set(sys.stdlib_module_names) | ENGINE_THIRD_PARTY | {"ve"}
    bad = [(str(p), m) for p in (ROOT / "ve").rglob("*.py") for m in imports_of(p)
           if m.split(".")[0] not in allowed]
    assert bad == []


def test_kernel_layer_does_not_import_orchestration():
    """ve/kernel takes primitives: it never imports the engine, config or CLI."""
    bad = [(str(p), m) for p in (ROOT / "ve" / "kernel").rglob("*.py") for m in imports_of(p)
           if (m == "ve" or m.startswith("ve.")) and not m.startswith("ve.kernel")]
    assert bad == []


def test_a_relative_import_of_a_sibling_module_is_seen():
    """The check above sees ``from .. import engine`` (it once let it through as ``ve``)."""
    probe = ROOT / "ve" / "kernel" / "_layers_probe.py"
    probe.write_text("from .. import engine\nfrom ..errors import VEError\n")
    try:
        assert sorted(imports_of(probe)) == ["ve.engine", "ve.errors"]
    finally:
        probe.unlink()


def import_cycles(modules):
    """Strongly connected groups of more than one module (or a module importing itself)."""
    graph = {name: {m for m in imports_of(path) if m in modules and m != name}
             for name, path in modules.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_the_engine_has_no_import_cycles():
    """Layers stay layers: no two ve/ modules import each other, even lazily."""
    assert import_cycles(engine_modules()) == []


def test_a_cycle_is_found():
    """The cycle check fails on a cycle (a check that cannot fail checks nothing)."""
    a, b = ROOT / "ve" / "_cycle_a.py", ROOT / "ve" / "_cycle_b.py"
    a.write_text("def f():\n    from . import _cycle_b\n")
    b.write_text("from . import _cycle_a\n")
    try:
        assert ["ve._cycle_a", "ve._cycle_b"] in import_cycles(engine_modules())
    finally:
        a.unlink()
        b.unlink()


def test_only_the_cli_prints():
    """Library modules log; only ve/cli.py prints or exits."""
    offenders = []
    for path in (ROOT / "ve").rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "exit" and \
                    getattr(node.value, "id", None) == "sys":
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == []

"""Import rules between layers, checked by parsing every module's imports."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE_THIRD_PARTY = {"pyroute2", "psutil"}


def imports_of(path):
    """Yield (absolute module name, is_relative_level) for each import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


def test_engine_imports_only_stdlib_pyroute2_psutil():
    """ve/ is usable alone: no Django, Celery or dashboard code."""
    allowed = set(sys.stdlib_module_names) | ENGINE_THIRD_PARTY | {"ve"}
    bad = [(str(p), m) for p in (ROOT / "ve").rglob("*.py") for m in imports_of(p)
           if m.split(".")[0] not in allowed]
    assert bad == []


def test_kernel_layer_does_not_import_orchestration():
    """ve/kernel takes primitives: it never imports the engine, config or CLI."""
    bad = [(str(p), m) for p in (ROOT / "ve" / "kernel").rglob("*.py") for m in imports_of(p)
           if m.startswith("ve.") and not m.startswith("ve.kernel")]
    assert bad == []


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

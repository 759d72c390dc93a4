"""Import rules between layers, checked by parsing every module's imports.

ve/ (the engine) stands alone and has layers of its own; in hosting/ only the
node side drives the engine (see test_web_side_never_drives_the_engine); neither
has import cycles.

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
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
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
            submodules = [f"{module}.{a.name}" for a in node.names
                          if _is_module(f"{module}.{a.name}")]
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


# --- hosting/: the web side never drives the engine --------------------------------

NODE_SIDE = {
    # module: why it may use the whole engine (it runs on the node, as root)
    "hosting.operations.executor": "runs one operation through ve.Engine",
    "hosting.operations.runners": "the engine calls of each operation kind",
    "hosting.operations.moving": "the migrate operation's runner (engine migrate)",
    "hosting.operations.backup_runners": "the backup operations' runners; a VPS restored "
                                         "on one node for another moves there (migrate)",
    "hosting.nodes.peers": "makes the node's migration keys and writes whom it trusts",
    "hosting.operations.reconcile": "compares the node (engine, /proc) with the database",
    "hosting.operations.node_events": "records the engine's events of VEs that ended",
    "hosting.environments.backup_node": "looks into and deletes backups (Engine.backup_*)",
    "hosting.nodes.worker": "the root worker: heartbeat (ve.host), events thread",
    "hosting.consoles.relay": "bridges a VE's console (Engine.console) with Redis",
    "hosting.stack": "starts the node's processes and asks the engine's watcher",
    "hosting.core.management.commands.runstack": "runs hosting.stack (make run)",
    "hosting.core.management.commands.seed_demo": "registers this host as the demo's node",
}
# Loaded by every process; their node code runs only in a node worker.
CELERY_WIRING = {"hosting.celery", "hosting.nodes.apps"}
# validators, errors, specs, constants, the seccomp policy's names (data, stdlib only)
PURE_ENGINE = {"ve.errors", "ve.validate", "ve.config", "ve.syscalls"}
# stdlib-only helpers of ve.config: file writing
PURE_HELPERS = {"ve.fsutil"}


def dashboard_modules():
    return {module_name(p): p for p in (ROOT / "hosting").rglob("*.py")}


def is_task_module(name):
    """Celery task modules: entry points of every worker, node ones included."""
    return name.rpartition(".")[2] == "tasks"


def web_side(modules):
    return {name: path for name, path in modules.items()
            if name not in NODE_SIDE and name not in CELERY_WIRING and not is_task_module(name)}


def engine_imports(path):
    return {m for m in imports_of(path) if m == "ve" or m.startswith("ve.")}


def web_side_violations(modules):
    """(module, import) pairs by which web-side code could reach the engine."""
    bad = []
    for name, path in sorted(web_side(modules).items()):
        for imported in sorted(set(imports_of(path))):
            if imported in engine_imports(path) and imported not in PURE_ENGINE:
                # ``from ve import X`` counts too: ve.Engine is one attribute away.
                bad.append((name, imported))
            elif imported in NODE_SIDE or imported in CELERY_WIRING - {"hosting.celery"} \
                    or (imported.startswith("hosting.") and is_task_module(imported)):
                bad.append((name, imported))  # tasks are sent by name (operations/dispatch.py)
    return bad


def test_web_side_never_drives_the_engine():
    """Only the node side (NODE_SIDE) drives ve.Engine; everything else is web side.

    *Node side*: the modules in NODE_SIDE, which run on a node as root and may
    import any engine module. *Web side*: every other hosting/ module. It may
    run anywhere (the web process, housekeeping, even the node worker: relay,
    restarts, usage.collection get the engine's figures handed in) but it
    imports only the engine's pure modules (PURE_ENGINE: validators, errors,
    config constants) and no node-side module, so no web request can reach an
    Engine. Between them sit the Celery wiring (hosting.celery's consumer
    step, nodes.apps connecting the worker's signals) and the ``tasks``
    modules, the workers' entry points: they may import the node side and
    themselves are imported by nothing web side (tasks are sent by name); the
    engine-driving part of a task runs only on a node queue.
    """
    assert web_side_violations(dashboard_modules()) == []


def test_the_task_modules_and_wiring_import_only_pure_engine_modules():
    """Entry points reach the engine through the node side, not by themselves."""
    modules = dashboard_modules()
    bad = [(name, m) for name, path in sorted(modules.items())
           if name in CELERY_WIRING or is_task_module(name)
           for m in sorted(engine_imports(path)) if m not in PURE_ENGINE]
    assert bad == []


def test_the_pure_engine_modules_are_pure():
    """What the web side may import reaches no engine, kernel, cgroup, network or storage code."""
    modules, seen, todo = engine_modules(), set(), sorted(PURE_ENGINE)
    while todo:  # everything they import, directly or not
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [m for m in engine_imports(modules[name]) if m in modules]
    assert sorted(seen - PURE_ENGINE - PURE_HELPERS) == []


def test_a_web_side_module_driving_the_engine_is_found():
    """The web-side rule fails on ``from ve import Engine`` and on a node-side import."""
    probe = ROOT / "hosting" / "_layers_probe.py"
    probe.write_text("from ve import Engine\nfrom ve.errors import VEError\n"
                     "def f():\n    from hosting.operations import executor, tasks\n")
    try:
        found = [m for name, m in web_side_violations(dashboard_modules())
                 if name == "hosting._layers_probe"]
        assert found == ["hosting.operations.executor", "hosting.operations.tasks", "ve"]
    finally:
        probe.unlink()


def test_every_node_side_module_exists():
    """A renamed module must not leave a stale exemption behind."""
    assert sorted(set(NODE_SIDE) - set(dashboard_modules())) == []


def test_the_dashboard_has_no_import_cycles():
    """No two hosting/ modules import each other, even lazily (send tasks by name; pass
    what a lower module needs in instead of importing upwards)."""
    assert import_cycles(dashboard_modules()) == []

#!/usr/bin/env python3
"""Where does a VE start spend its time? A breakdown for the API and for vectl.

API: times each engine step of ``Engine.start``/``stop(fast=True)`` from a
warm process by wrapping the engine's own functions (nothing in ve/ is
changed), idle (50 ms pause) and back to back. CLI: wall time of growing
prefixes of what ``vectl start`` does (interpreter, imports, parser, the
call), then a cProfile of one ``vectl start`` and ``-X importtime``'s
slowest imports. Same throw-away VE_ROOT and cgroup prefix as the benchmark,
removed at the end.

    .venv/bin/python bench/profile_start.py [--runs 20]
"""

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (REPO, cleanup_remains, find_vectl, import_engine,  # noqa: E402
                    interrupts_as_exceptions, require_root, uninterrupted)

VEID = 101


def _timed(store, label, func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            store.setdefault(label, []).append((time.perf_counter() - t0) * 1000)
    return wrapper


def profile_api(engine, runs):
    import ve.engine.lifecycle as engine_module
    store = {}
    import ve.kernel.spawn as spawn_module  # _spawn imports spawn_init from it on use
    patches = [(spawn_module, "spawn_init", "start: spawn_init (ve-spawn program)"),
               (engine_module.state, "record_init", "start: state.record_init (fsync)"),
               (engine.cgroups, "create", "start: cgroups.create"),
               (engine.cgroups, "kill", "stop: cgroups.kill"),
               (engine.cgroups, "destroy", "stop: cgroups.destroy")]
    saved = []
    for obj, name, label in patches:
        if hasattr(obj, name):
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, _timed(store, label, getattr(obj, name)))
    out = {}
    try:
        engine.start(VEID)
        engine.stop(VEID, fast=True)
        for mode, pause in (("idle", 0.05), ("b2b", 0)):
            store.clear()
            starts, stops = [], []
            for _ in range(runs):
                time.sleep(pause)
                t0 = time.perf_counter()
                engine.start(VEID)
                starts.append((time.perf_counter() - t0) * 1000)
                time.sleep(pause)
                t0 = time.perf_counter()
                engine.stop(VEID, fast=True)
                stops.append((time.perf_counter() - t0) * 1000)
            out[mode] = {"start": statistics.median(starts), "stop": statistics.median(stops),
                         **{k: statistics.median(v) for k, v in store.items()}}
    finally:
        for obj, name, original in saved:
            setattr(obj, name, original)
    return out


def _wall(argv, env, runs):
    values = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL)
        values.append((time.perf_counter() - t0) * 1000)
    return statistics.median(values)


def profile_cli(vectl, env, runs):
    shebang = open(vectl).readline()[2:].split()
    py = shebang[0]
    flags = shebang[1:]
    path = f"import sys; sys.path[:0] = [{str(REPO)!r}]"
    steps = [
        ("interpreter (vectl's flags: " + " ".join(flags) + ")", [py, *flags, "-c", "pass"]),
        ("+ import ve.cli", [py, *flags, "-c", f"{path}; import ve.cli"]),
        ("+ import ve.engine", [py, *flags, "-c", f"{path}; import ve.cli, ve.engine"]),
        ("+ parse the arguments", [py, *flags, "-c",
                                   f"{path}; import ve.cli, ve.engine; "
                                   f"ve.cli.parse(['status', '{VEID}'], ve.cli.VERBS)"]),
        ("vectl status (parse, Engine(), read state)", [vectl, "status", str(VEID)]),
    ]
    out = {label: _wall(argv, env, runs) for label, argv in steps}
    starts, stops = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([vectl, "start", str(VEID)], env=env, stdout=subprocess.DEVNULL)
        starts.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        subprocess.run([vectl, "stop", "--fast", str(VEID)], env=env, stdout=subprocess.DEVNULL)
        stops.append((time.perf_counter() - t0) * 1000)
    out["vectl start"] = statistics.median(starts)
    out["vectl stop --fast"] = statistics.median(stops)
    prof = tempfile.mktemp(suffix=".prof")
    code = (f"{path}; import cProfile; sys.argv = ['vectl', 'start', '{VEID}']; "
            f"cProfile.run('from ve.cli import main; main()', {prof!r})")
    subprocess.run([py, *flags, "-c", code], env=env, stdout=subprocess.DEVNULL)
    subprocess.run([vectl, "stop", "--fast", str(VEID)], env=env, stdout=subprocess.DEVNULL)
    import pstats
    import io
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(25)
    os.unlink(prof)
    imports = subprocess.run([py, *flags, "-X", "importtime", "-c",
                              f"{path}; import ve.cli, ve.engine"],
                             env=env, capture_output=True, text=True).stderr.splitlines()
    rows = [line.split("|") for line in imports if line.startswith("import time:")
            and "cumulative" not in line]
    rows = sorted(rows, key=lambda r: -int(r[1]))[:20]
    return out, text.getvalue(), ["|".join(r) for r in rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    require_root()
    Engine, VEConfig, Limits, _ = import_engine()
    vectl = find_vectl()
    workdir = Path(tempfile.mkdtemp(prefix=f"vebench-{os.getpid()}-", dir="/var/tmp"))
    prefix = f"vebench-{os.getpid()}"
    engine = Engine(root=str(workdir / "ve"), cgroup_parent=f"{prefix}/ve")
    env = {**os.environ, "VE_ROOT": str(workdir / "ve"), "VE_CGROUP_PARENT": f"{prefix}/ve"}
    try:
        with interrupts_as_exceptions():
            engine.template_build("busybox")
            engine.create(VEConfig(VEID, "prof", "busybox", Limits(ram=256 << 20, numproc=256)))
            api = profile_api(engine, args.runs)
            cli, cprofile, imports = profile_cli(vectl, env, args.runs)
    finally:
        with uninterrupted():
            try:
                engine.destroy(VEID)
            except Exception as exc:
                print(f"destroy: {exc}", file=sys.stderr)
            cleanup_remains(prefix, workdir)
            shutil.rmtree(workdir, ignore_errors=True)
    print("API, medians in ms")
    for mode, values in api.items():
        print(f"  {mode}")
        for label, value in values.items():
            print(f"    {label:<44}{value:8.2f}")
    print("\nCLI, medians of wall time in ms")
    for label, value in cli.items():
        print(f"  {label:<50}{value:8.1f}")
    print("\ncProfile of one `vectl start` (cumulative)\n" + cprofile)
    print("slowest imports (-X importtime: self us | cumulative us | module)")
    print("\n".join(imports))
    return 0


if __name__ == "__main__":
    sys.exit(main())

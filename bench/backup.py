#!/usr/bin/env python3
"""Backups of a VE into a restic repository: a first full backup, then an incremental
one after 50 MiB of changes, then a restore of the whole VE and of one file.

One VE (busybox, or with ``--template debian-12`` a systemd Debian VE built with
the Debian mirror) on VE_ROOT on an XFS filesystem with reflinks (a loop-mounted
sparse file in the workspace), the repository a local directory beside it. For
each step: its time and the bytes the repository grew by (``du`` of the
repository, restic compresses and deduplicates). Every figure is from one run;
``--runs`` repeats the incremental backup and the restores for p50 and max.

Writes bench/results/backup-<template>.json and removes every VE, mount, loop
device, cgroup and file it made, also on failure or Ctrl-C.

    .venv/bin/python bench/backup.py [--template busybox] [--runs 3]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS_DIR, Workspace, import_engine, interrupts_as_exceptions,  # noqa: E402
                    log, percentile, require_root, write_json)
from snapshot import _pool, _stop_watcher  # noqa: E402

VEID, NEW_VEID = 194, 195
GiB, MiB = 1 << 30, 1 << 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="busybox")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    require_root()
    Engine, VEConfig, Limits, _ = import_engine()
    output = args.output or str(RESULTS_DIR / f"backup-{args.template}.json")
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": vars(args)}
    ws = Workspace()
    try:
        with interrupts_as_exceptions():
            results["figures"] = _measure(ws, Engine, VEConfig, Limits, args)
    finally:
        results["cleanup_problems"] = ws.cleanup()
    print(table(results["figures"]))
    write_json(output, results)
    log(f"results in {output}")
    return 1 if results["cleanup_problems"] else 0


def _measure(ws, Engine, VEConfig, Limits, args):
    from ve.storage import recipes, templates
    root = _pool(ws)
    cache = root / "template" / "cache"
    cache.mkdir(parents=True)
    if args.template == "busybox":
        templates.build_busybox(cache)
    else:
        log(f"building template {args.template}")
        recipes.build(cache, args.template)
    engine = Engine(root=str(root), cgroup_parent=f"{ws.cgroup_prefix}/backup/ve")
    ws.on_cleanup(lambda: _stop_watcher(engine.layout))
    ws.on_cleanup(lambda: [engine.destroy(v, timeout=2) for v in (VEID, NEW_VEID)])
    limits = Limits(diskspace=4 * GiB, ram=256 * MiB)
    engine.create(VEConfig(VEID, "backed.example", args.template, limits))
    engine.start(VEID)
    time.sleep(5 if args.template != "busybox" else 1)  # let it boot
    repo = Path(engine.backup_repository().url)
    figures = {}

    began, before = time.monotonic(), 0
    first = engine.backup(VEID)
    figures["first backup"] = {"seconds": [round(time.monotonic() - began, 3)],
                               "stored_bytes": [_du(repo) - before],
                               "source_bytes": [first["total_bytes"]]}
    log(f"first: {figures['first backup']}")
    for run in range(args.runs):
        _sh(engine, f"dd if=/dev/urandom of=/root/change-{run} bs=1M count=50 2>/dev/null")
        before, began = _du(repo), time.monotonic()
        engine.backup(VEID)
        _add(figures, "incremental backup (50 MiB changed)",
             seconds=round(time.monotonic() - began, 3), stored_bytes=_du(repo) - before)
        latest = engine.backups(VEID)[-1]["id"]
        began = time.monotonic()
        engine.restore_files(VEID, latest, f"/root/change-{run}", into="/tmp")
        _add(figures, "restore one file (50 MiB)", seconds=round(time.monotonic() - began, 3))
        began = time.monotonic()
        engine.restore_backup(VEID, latest)
        _add(figures, "restore the whole VE (stopped, restored, started)",
             seconds=round(time.monotonic() - began, 3))
        log(f"run {run + 1}: " + ", ".join(f"{k}: {v['seconds'][-1]}" for k, v in
                                            figures.items() if len(v["seconds"]) > run))
    return {name: {key: {"p50": percentile(values, 50), "max": max(values), "n": len(values)}
                   for key, values in values_by.items()}
            for name, values_by in figures.items()}


def _add(figures, name, **values):
    for key, value in values.items():
        figures.setdefault(name, {}).setdefault(key, []).append(value)


def _du(path):
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _sh(engine, script):
    done = engine.exec(VEID, ["sh", "-c", script])
    if done.returncode:
        raise RuntimeError(f"{script!r} failed in the VE: {done.stdout!r}")


def table(figures):
    lines = ["| step | seconds p50 (max) | repository grew by |", "|---|---:|---:|"]
    for name, by in figures.items():
        stored = by.get("stored_bytes")
        lines.append(f"| {name} | {by['seconds']['p50']:g} ({by['seconds']['max']:g}) | "
                     + (f"{stored['p50'] / MiB:.1f} MiB" if stored else "") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Snapshots of a running VE: how long it is frozen, how long the call takes, side by
side on a host filesystem with reflinks (XFS) and on one without (ext4, full copy).

Each case: one busybox VE with a 10 GiB disk image holding 2 GiB of data, and a
writer inside appending to a file all along (a VPS at work). ``--runs`` snapshots
are taken and deleted in turn; each one's frozen time (processes frozen, from the
engine's record), the time its writes waited (the filesystem frozen) and the whole
call are kept, with p50 and max. The XFS pool is a sparse file on a loop device
under the workspace; ext4 is the workspace's own filesystem (/var/tmp).

Writes bench/results/snapshot.json and removes every VE, mount, loop device,
cgroup and file it made, also on failure or Ctrl-C.

    .venv/bin/python bench/snapshot.py [--runs 5] [--used-gib 2] [--disk-gib 10]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS_DIR, Workspace, import_engine, interrupts_as_exceptions,  # noqa: E402
                    log, percentile, require_root, write_json)

VEID = 193
GiB = 1 << 30


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--used-gib", type=float, default=2.0)
    parser.add_argument("--disk-gib", type=int, default=10)
    parser.add_argument("--output", default=str(RESULTS_DIR / "snapshot.json"))
    args = parser.parse_args(argv)
    require_root()
    Engine, VEConfig, Limits, _ = import_engine()
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": vars(args), "cases": {}}
    ws = Workspace()
    try:
        with interrupts_as_exceptions():
            for case in ("xfs-reflink", "ext4-copy"):
                root = _pool(ws) if case == "xfs-reflink" else ws.path("ext4")
                results["cases"][case] = _case(ws, root, case, Engine, VEConfig, Limits, args)
    finally:
        results["cleanup_problems"] = ws.cleanup()
    print(table(results["cases"]))
    write_json(args.output, results)
    log(f"results in {args.output}")
    return 1 if results["cleanup_problems"] else 0


def _pool(ws):
    """An XFS filesystem with reflinks on a sparse file, mounted in the workspace."""
    pool, root = ws.path("pool.xfs"), ws.path("xfs")
    with open(pool, "wb") as f:
        f.truncate(32 * GiB)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(pool)], check=True)
    root.mkdir()
    subprocess.run(["mount", "-o", "loop", str(pool), str(root)], check=True)
    ws.on_cleanup(lambda: _unmount(root))
    return root


def _unmount(root):
    """Unmount the pool once the VE's image loop device on it has let go (a moment after
    its own unmount)."""
    deadline = time.monotonic() + 15
    while subprocess.run(["umount", str(root)], capture_output=True).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{root} stays busy")
        time.sleep(0.1)


def _case(ws, root, case, Engine, VEConfig, Limits, args):
    from ve.storage import templates
    cache = root / "template" / "cache"
    cache.mkdir(parents=True)
    templates.build_busybox(cache)
    engine = Engine(root=str(root), cgroup_parent=f"{ws.cgroup_prefix}/{case}/ve")
    ws.on_cleanup(lambda: _stop_watcher(engine.layout))  # it holds files of the root
    ws.on_cleanup(lambda: engine.destroy(VEID, timeout=2))
    engine.create(VEConfig(VEID, "snap.example", "busybox",
                           Limits(diskspace=args.disk_gib * GiB, diskinodes=200000)))
    engine.start(VEID)
    log(f"{case}: writing {args.used_gib} GiB into the VE")
    mib = int(args.used_gib * 1024)
    _sh(engine, f"dd if=/dev/urandom of=/root/data bs=1M count={mib} 2>/dev/null; sync")
    _sh(engine, "(while :; do date >> /root/log; usleep 20000; done) >/dev/null 2>&1 &")
    runs = []
    for n in range(args.runs):
        began = time.monotonic()
        taken = engine.snapshot(VEID, f"s{n}")
        runs.append({"frozen_ms": taken["frozen_ms"], "blocked_ms": taken["blocked_ms"],
                     "seconds": round(time.monotonic() - began, 3),
                     "method": taken["method"]})
        log(f"  {case}: {runs[-1]}")
        engine.snapshot_delete(VEID, f"s{n}")
    used = engine.disk_usage(VEID).space_used
    return {"runs": runs, "used_bytes": used, "summary": {
        name: {"p50": percentile([r[name] for r in runs], 50),
               "max": max(r[name] for r in runs)}
        for name in ("frozen_ms", "blocked_ms", "seconds")}}


def _stop_watcher(layout):
    """The node watcher the VE's start began ends with the case."""
    from ve import watch
    try:
        watch.request(layout, {"op": "stop"}, timeout=5)
    except (OSError, ValueError):
        return  # none runs
    deadline = time.monotonic() + 15
    while watch.running(layout) and time.monotonic() < deadline:
        time.sleep(0.05)


def _sh(engine, script):
    done = engine.exec(VEID, ["sh", "-c", script])
    if done.returncode:
        raise RuntimeError(f"{script!r} failed in the VE: {done.stdout!r}")


def table(cases):
    lines = ["| p50 (max) | " + " | ".join(cases) + " |", "|---|" + "---:|" * len(cases)]
    for name in ("frozen_ms", "blocked_ms", "seconds"):
        cells = [f"{c['summary'][name]['p50']:g} ({c['summary'][name]['max']:g})"
                 for c in cases.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

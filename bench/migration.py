#!/usr/bin/env python3
"""Live vs offline migration between two nodes on this machine, side by side in one run.

Two nodes as the migration tests build them (``tests/engine/nodes.py``: each its
own VE_ROOT, cgroup parent and network namespace, a data-centre bridge between
them, a migration sshd each) and one busybox VE (2 GiB disk image, a routed
address) running a program that holds N MiB of anonymous memory and keeps
writing it (it checks what it reads back: memory that came back wrong ends it,
and the bench fails). For each size the VE moves back and forth, a live move
and an offline one in turn, and each move's result is kept:

  downtime      frozen (live) or stopped (offline) at the source until it runs
                at the target, as ``vectl migrate`` measures it
  total         the whole move, pre-copy included
  precopy       the disk copied while the VE runs
  phases        the parts of the downtime (checkpoint, disk, state, restore;
                offline: stop, disk, state, start)
  checkpoint    bytes of checkpoint images sent (live)

Writes bench/results/migration.json (every move, and p50/max per case) and
removes every VE, namespace, link, cgroup, mount, loop device and file it
made, also on failure or Ctrl-C.

With ``--debian debian-12,debian-13`` a systemd Debian VE of each (1 GiB disk,
256 MiB) moves the same way with an SSH session open from the data centre,
which each live move must keep.

    .venv/bin/python bench/migration.py [--sizes 64,256] [--runs 5] [--debian NAMES]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS_DIR, Workspace, import_engine, interrupts_as_exceptions,  # noqa: E402
                    log, percentile, require_root, unmount_and_detach, write_json)

VEID = 191
VE_IP = "198.18.9.60"

# Holds MiB of anonymous memory and rewrites every page each pass: page i holds
# (pass, i) and the next pass checks it first, so memory that comes back wrong after a
# move ends it with status 3. A pass every 200 ms keeps every page dirty between moves.
DIRTY = r"""
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t size = (size_t)atol(argv[1]) << 20, pages = size / 4096;
    unsigned long *mem = mmap(0, size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return 2;
    for (unsigned long pass = 1;; pass++) {
        for (size_t i = 0; i < pages; i++) {
            unsigned long *page = mem + i * (4096 / sizeof *mem);
            if (pass > 1 && (page[0] != pass - 1 || page[1] != i)) return 3;
            page[0] = pass;
            page[1] = i;
        }
        usleep(200000);
    }
}
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,256", help="MiB of dirty memory, one case each")
    parser.add_argument("--runs", type=int, default=5, help="live moves (and offline) per size")
    parser.add_argument("--debian", default="",
                        help="systemd Debian templates to move too, with an SSH session "
                             "open (e.g. debian-12,debian-13; built with the Debian mirror)")
    parser.add_argument("--output", default=str(RESULTS_DIR / "migration.json"))
    args = parser.parse_args(argv)
    require_root()
    Engine, VEConfig, Limits, _ = import_engine()
    started = time.time()
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": vars(args),
               "engine": _git_head(), "cases": {}}
    ws = Workspace()
    try:
        with interrupts_as_exceptions():
            results["cases"] = _measure(ws, Engine, VEConfig, Limits, args)
    finally:
        problems = unmount_and_detach(ws.dir) + ws.cleanup()
        results["cleanup_problems"] = problems
    results["wall_s"] = round(time.time() - started, 1)
    print(table(results["cases"]))
    write_json(args.output, results)
    log(f"results in {args.output}")
    return 1 if results["cleanup_problems"] else 0


def _measure(ws, Engine, VEConfig, Limits, args):
    from ve.storage import templates
    from tests.engine.nodes import UPLINK, two_nodes
    os.environ["VE_NET_UPLINK"] = UPLINK  # the nodes announce VEs on their uplink
    engines = []
    for name in ("a", "b"):
        cache = ws.path(name, "template", "cache")
        cache.mkdir(parents=True)
        if engines:
            for item in engines[0].layout.cache_dir.iterdir():
                shutil.copy2(item, cache / item.name)
        else:
            templates.build_busybox(cache)
        engines.append(Engine(root=str(ws.path(name)),
                              cgroup_parent=f"{ws.cgroup_prefix}/{name}/ve"))
    debians = [name.strip() for name in args.debian.split(",") if name.strip()]
    for name in debians:
        from ve.storage import recipes
        log(f"building template {name}")
        recipes.build(engines[0].layout.cache_dir, name)
        for item in engines[0].layout.cache_dir.iterdir():
            shutil.copy2(item, engines[1].layout.cache_dir / item.name)
    program = _build_dirty(ws)
    cases = {}
    with two_nodes(*engines) as (a, b, dc):
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            cases[f"{size} MiB"] = _case(a, b, VEConfig, Limits, program, size, args.runs)
        for name in debians:
            cases[name] = _debian_case(a, b, dc, VEConfig, Limits, name, args.runs)
    return cases


def _case(a, b, VEConfig, Limits, program, size, runs):
    """``runs`` live and ``runs`` offline moves, in turn, of a VE dirtying ``size`` MiB."""
    log(f"{size} MiB: {runs} live and {runs} offline moves")
    a.engine.create(VEConfig(VEID, "moving.example", "busybox",
                             Limits(ram=(size + 256) << 20), ips=(VE_IP,)))

    def after(there, mode):
        if mode == "live" and not _alive(there.engine):
            raise RuntimeError("the memory writer did not survive the live move")

    return _back_and_forth(a, b, runs, lambda here, mode: _dirty(here.engine, program, size),
                           after)


def _debian_case(a, b, dc, VEConfig, Limits, template, runs):
    """``runs`` live and ``runs`` offline moves, in turn, of a systemd Debian VE with an
    SSH session open from the data centre: a live move must keep it (same shell, same
    answers); an offline one ends it, and a new one is opened once the VE has booted."""
    from tests.engine.test_debian import HeldSession, booted, set_root_password
    log(f"{template}: {runs} live and {runs} offline moves, an SSH session open")
    a.engine.create(VEConfig(VEID, "moving-debian.example", template,
                             Limits(diskspace=1 << 30, ram=256 << 20), ips=(VE_IP,)))
    held = {}  # "session", "shell" while one is open

    def before(here, mode):
        if not held.get("password"):
            set_root_password(here.engine, VEID)  # once it runs
            held["password"] = True
        if "session" not in held:
            booted(here.engine, VEID)
            held["session"] = HeldSession(dc.path, VE_IP)
        held["shell"] = held["session"].run("echo $$")["out"]

    def after(there, mode):
        if mode == "offline":
            held.pop("session").close()
            return
        answer = held["session"].run("echo $$")
        if answer != {"out": held["shell"]}:
            raise RuntimeError(f"the SSH session did not survive: {answer}")

    try:
        return _back_and_forth(a, b, runs, before, after)
    finally:
        if "session" in held:
            held["session"].close()


def _back_and_forth(a, b, runs, before, after):
    """Start VE VEID at ``a``, then move it ``runs`` times live and offline in turn
    between the nodes, calling ``before(here, mode)`` and ``after(there, mode)``
    around each move; destroy it; return {mode: {"moves", "summary"}}."""
    here, there = a, b
    here.net.engine("print(e.start(v['veid']))", veid=VEID)
    moves = {"live": [], "offline": []}
    try:
        for _ in range(runs):
            for mode in ("live", "offline"):
                before(here, mode)
                args = ["migrate", VEID, "--to", there.target()]
                done = here.vectl(*args, *(["--offline"] if mode == "offline" else []))
                if done["mode"] != mode:
                    raise RuntimeError(f"asked for a {mode} move, got {done}")
                after(there, mode)
                moves[mode].append(done)
                log(f"  {mode}: downtime {done['downtime_s']} s, {done['phases_s']}")
                here, there = there, here
    finally:
        here.net.engine("e.destroy(v['veid'], timeout=2)\nprint('null')", veid=VEID)
    return {mode: {"moves": done, "summary": summarise(done)} for mode, done in moves.items()}


def _build_dirty(ws):
    source = ws.path("dirty.c")
    source.write_text(DIRTY)
    subprocess.run([shutil.which("gcc") or "gcc", "-static", "-O2", "-o", str(ws.path("dirty")),
                    str(source)], check=True, capture_output=True)
    return ws.path("dirty").read_bytes()


def _dirty(engine, program, size):
    """The memory writer runs in the VE (installed and started if it does not), with
    all its memory written once."""
    if _alive(engine):
        return
    engine.exec(VEID, ["sh", "-c", "cat > /bin/dirty && chmod 755 /bin/dirty"], input=program)
    engine.exec(VEID, ["sh", "-c", f"/bin/dirty {size} >/dev/null 2>&1 &"])
    time.sleep(0.5 + size / 256)  # its first pass, and a few more


def _alive(engine):
    return engine.exec(VEID, ["pidof", "dirty"]).returncode == 0


def summarise(moves):
    """p50 and max of each figure of ``moves`` (migrate results)."""
    figures = {}
    for done in moves:
        for name in ("downtime_s", "total_s", "precopy_s"):
            figures.setdefault(name, []).append(done[name])
        for name, seconds in done["phases_s"].items():
            figures.setdefault(f"phase {name}", []).append(seconds)
        if done.get("sent", {}).get("checkpoint"):
            figures.setdefault("checkpoint MiB", []).append(done["sent"]["checkpoint"] / 2**20)
    return {name: {"p50": round(percentile(values, 50), 3), "max": round(max(values), 3),
                   "n": len(values)} for name, values in figures.items()}


def table(cases):
    """The p50 (max) of every figure, a column per case and mode, as Markdown."""
    columns = [(case, mode) for case in cases for mode in cases[case]]
    names = []
    for case, mode in columns:
        names += [n for n in cases[case][mode]["summary"] if n not in names]
    lines = ["| p50 (max), seconds | " + " | ".join(f"{case} {mode}" for case, mode in columns)
             + " |", "|---|" + "---:|" * len(columns)]
    for name in names:
        cells = []
        for case, mode in columns:
            got = cases[case][mode]["summary"].get(name)
            cells.append(f"{got['p50']:.2f} ({got['max']:.2f})" if got else "")
        lines.append(f"| {name.removesuffix('_s')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _git_head():
    return subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse",
                           "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What the node watcher costs and how fast it acts, side by side in one run.

On one node (a fresh VE_ROOT and cgroup prefix): a node watcher
(``vectl watch``), and busybox VEs (directory layout, as bench/run.py uses)
started through the Python API, alternately with and without the seccomp
notifier (VE_WATCH on / off):

  start           median time of Engine.start with the notifier (the socket
                  round trips to the watcher, the filter, the listener handed
                  over) and without, each after the host was idle 50 ms
  sysinfo         one sysinfo(2) inside a VE, answered by the watcher (the
                  VE's own figures) and by the kernel (the host's), timed by a
                  static C program that calls it N times
  reboot          from a reboot(2) inside (called directly, no init shutdown
                  script) to the VE running again under a new init, as the
                  caller of vectl status sees it
  memory          RSS and PSS of the watcher and its twin, idle, with N VEs
                  handed over (one listener each)

Writes bench/results/watcher.json and removes every VE, the watcher,
cgroups and files afterwards.

    .venv/bin/python bench/watcher.py [--count 100] [--runs 30] [--calls 2000]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (REPO, RESULTS_DIR, Workspace, import_engine, log, pss,  # noqa: E402
                    require_root, summary, write_json)

PROBE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/reboot.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == 'r') return reboot(RB_AUTOBOOT);
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    struct sysinfo s;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) sysinfo(&s);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f %lu\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n / 1000.0,
           s.totalram * s.mem_unit);
    return 0;
}
"""


def build_probe(ws):
    source = ws.path("probe.c")
    source.write_text(PROBE)
    binary = ws.path("probe")
    subprocess.run([shutil.which("gcc") or "gcc", "-static", "-O2", "-o", str(binary),
                    str(source)], check=True, capture_output=True)
    return binary.read_bytes()


def start_watcher(ws, root, parent):
    env = dict(os.environ, VE_ROOT=str(root), VE_CGROUP_PARENT=parent, VE_LXCFS="off",
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "ve.cli", "watch"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(ws.path("watcher.log"), "ab"))
    from ve import watch
    from ve.paths import Layout
    deadline = time.monotonic() + 15
    while not watch.running(Layout(root)):
        assert time.monotonic() < deadline, "the watcher did not come up"
        time.sleep(0.05)
    return proc


def timed_starts(engine, veid, runs, notify):
    os.environ["VE_WATCH"] = "on" if notify else "off"
    times = []
    for _ in range(runs):
        time.sleep(0.05)
        started = time.perf_counter()
        engine.start(veid)
        times.append((time.perf_counter() - started) * 1000)
        engine.stop(veid, fast=True)
    return times


def sysinfo_us(engine, veid, calls):
    out = engine.exec(veid, ["/probe", str(calls)]).stdout.split()
    return float(out[0]), int(out[1])


def reboot_ms(engine, veid):
    """Milliseconds from a reboot(2) inside to the VE running under a new init."""
    old = engine.status(veid).init_pid
    started = time.perf_counter()
    engine.exec(veid, ["/probe", "reboot"])
    while True:
        status = engine.status(veid)
        if status.state == "running" and status.init_pid != old:
            return (time.perf_counter() - started) * 1000
        assert time.perf_counter() - started < 30, f"VE {veid} did not come back: {status}"
        time.sleep(0.002)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="VEs for the memory part")
    parser.add_argument("--runs", type=int, default=30, help="timed starts and reboots each")
    parser.add_argument("--calls", type=int, default=2000, help="sysinfo calls per timing")
    args = parser.parse_args()
    require_root()
    Engine, VEConfig, Limits, _ = import_engine()
    ws = Workspace()
    root, parent = ws.path("root"), f"{ws.cgroup_prefix}/ve"
    os.environ.update(VE_ROOT=str(root), VE_CGROUP_PARENT=parent, VE_LXCFS="off")
    engine = Engine(root=str(root), cgroup_parent=parent)
    watcher = None
    try:
        engine.template_build("busybox")
        probe = build_probe(ws)
        limits = Limits(ram="128M", diskspace="64M", diskinodes=4096)
        engine.create(VEConfig(101, "bench", "busybox", limits, layout="dir"))
        watcher = start_watcher(ws, root, parent)
        log("timing starts with and without the notifier")
        with_notify, without = [], []
        for _ in range(args.runs // 5):  # interleaved, so drift hits both alike
            with_notify += timed_starts(engine, 101, 5, True)
            without += timed_starts(engine, 101, 5, False)
        results = {"start_ms": {"with_notifier": summary(with_notify),
                                "without": summary(without)}}
        log("timing sysinfo(2) inside")
        os.environ["VE_WATCH"] = "on"
        engine.start(101)
        engine.exec(101, ["sh", "-c", "cat > /probe && chmod 755 /probe"], input=probe)
        answered = [sysinfo_us(engine, 101, args.calls) for _ in range(5)]
        os.environ["VE_WATCH"] = "off"
        engine.restart(101, timeout=5)
        kernel = [sysinfo_us(engine, 101, args.calls) for _ in range(5)]
        results["sysinfo_us"] = {
            "watcher": summary([a for a, _ in answered]), "kernel": summary([k for k, _ in kernel]),
            "total_ram_seen": {"watcher": answered[0][1], "kernel": kernel[0][1]}}
        log("timing reboots from inside")
        os.environ["VE_WATCH"] = "on"
        engine.restart(101, timeout=5)
        results["reboot_ms"] = summary([reboot_ms(engine, 101) for _ in range(args.runs // 3)])
        engine.stop(101, fast=True)
        log(f"starting {args.count} VEs for the memory part")
        twin = [int(p) for p in subprocess.run(["pgrep", "-P", str(watcher.pid)],
                                               capture_output=True, text=True).stdout.split()]
        before = {"watcher": rss_kib(watcher.pid), "twin": sum(rss_kib(p) for p in twin)}
        for veid in range(1000, 1000 + args.count):
            engine.create(VEConfig(veid, f"b{veid}", "busybox", limits, layout="dir"))
            engine.start(veid)
        time.sleep(3)
        after = {"watcher": rss_kib(watcher.pid), "twin": sum(rss_kib(p) for p in twin)}
        results["memory_kib"] = {"before": before, "after": after, "ves": args.count,
                                 "watcher_pss_after": pss(watcher.pid),
                                 "per_ve": (after["watcher"] + after["twin"] - before["watcher"]
                                            - before["twin"]) / args.count}
        write_json(RESULTS_DIR / "watcher.json", results)
        for key, value in results.items():
            log(f"{key}: {value}")
    except BaseException:
        log("the watcher's log:\n" + ws.path("watcher.log").read_text()[-3000:])
        raise
    finally:
        for veid in engine.layout.veids():
            try:
                engine.destroy(veid, timeout=2)
            except Exception as exc:
                log(f"cleanup of {veid}: {exc}")
        if watcher is not None:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(timeout=30)
        ws.cleanup()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What LXCFS costs per VE: host memory, CPU, start time and /proc read latency.

In one run, on one node: starts one lxcfs (``LxcfsSupervisor``, as the node
watcher does), then N busybox VEs with lxcfs and N without, interleaved
(even VEIDs with, odd without), timing each start. Every VE with lxcfs
reads its lxcfs files once (lxcfs keeps state per container from the first
read on: load averages, CPU views), the host settles, and then:

  lxcfs memory    RSS and PSS of the lxcfs process before the VEs and after,
                  per VE with lxcfs
  lxcfs CPU       CPU time lxcfs used over an idle window (its load-average
                  thread walks every container it knows), as a share of a core
  read latency    open + read + close of /proc/meminfo (and uptime, stat,
                  loadavg, cpuinfo) by a process inside a VE with lxcfs and
                  inside one without, side by side: a forked reader joins the
                  VE's PID and mount namespaces, as ``vectl exec`` does
  mounts          the binds a VE with lxcfs has beyond one without, and
                  their ``struct mount`` size (from /proc/slabinfo)
  check()         one supervision round over the VEs with lxcfs (the watcher
                  runs one every few seconds), then the round after a kill -9
                  of lxcfs that restarts it and re-binds every one of them

Writes bench/results/lxcfs.json; removes every VE, the lxcfs, its mount,
cgroups and files afterwards.

    .venv/bin/python bench/lxcfs.py [--count 100] [--reads 2000] [--settle 12]
"""

import argparse
import json
import os
import resource
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CLONE_NEWNS, RESULTS_DIR, Workspace, import_engine,  # noqa: E402
                    interrupts_as_exceptions, log, pss, require_root, setns, summary,
                    wait_gone, write_json)

FIRST_VEID = 1000
CLONE_NEWPID = 0x20000000
FILES = ("/proc/meminfo", "/proc/uptime", "/proc/stat", "/proc/loadavg", "/proc/cpuinfo")
TOUCH = "cat /proc/meminfo /proc/stat /proc/uptime /proc/loadavg /proc/cpuinfo " \
        "/proc/diskstats /proc/swaps /sys/devices/system/cpu/online >/dev/null"


def read_inside(init_pid, path, reads):
    """Microseconds of each of ``reads`` open+read+close of ``path`` inside the VE,
    and the first line read."""
    read_end, write_end = os.pipe()
    helper = os.fork()
    if helper == 0:  # joins the VE's PID namespace: its next child is inside
        try:
            setns(os.open(f"/proc/{init_pid}/ns/pid", os.O_RDONLY), CLONE_NEWPID)
            mnt = os.open(f"/proc/{init_pid}/ns/mnt", os.O_RDONLY)
            reader = os.fork()
            if reader == 0:
                setns(mnt, CLONE_NEWNS)
                os.write(write_end, json.dumps(_time_reads(path, reads)).encode())
                os._exit(0)
            os.waitpid(reader, 0)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(helper, 0)
    return json.loads(data)


def _time_reads(path, reads):
    samples = []
    for _ in range(reads):
        started = time.perf_counter_ns()
        with open(path, "rb") as handle:
            first = handle.read()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return {"us": samples, "first_line": first.split(b"\n", 1)[0].decode()}


def lxcfs_usage(pid):
    """{rss_kb, pss_kb, cpu_s} of the lxcfs process."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rpartition(b")")[2].split()
    memory = pss(pid)
    return {"rss_kb": memory["Rss"], "pss_kb": memory["Pss"],
            "cpu_s": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")}


def extra_mounts(with_pid, without_pid):
    """Mounts a VE with lxcfs has beyond one without, and their size in the kernel (bytes)."""
    count = [len(Path(f"/proc/{pid}/mountinfo").read_text().splitlines())
             for pid in (with_pid, without_pid)]
    objsize = 0
    for line in Path("/proc/slabinfo").read_text().splitlines():
        if line.startswith("mnt_cache "):
            objsize = int(line.split()[3])
    return {"mounts": count[0] - count[1], "mnt_cache_bytes": (count[0] - count[1]) * objsize}


def start_all(engine, VEConfig, Limits, count, lxcfs_dir):
    """Start 2*count VEs, even VEIDs with lxcfs; return {veid: (init pid, with, ms)}."""
    started = {}
    for i in range(2 * count):
        veid, with_lxcfs = FIRST_VEID + i, i % 2 == 0
        os.environ["VE_LXCFS"] = lxcfs_dir if with_lxcfs else "off"
        engine.create(VEConfig(veid, f"ve{veid}.bench", "busybox",
                               Limits(ram="128M", cpus=1, cpulimit=100), layout="dir"))
        t0 = time.perf_counter()
        pid = engine.start(veid)
        started[veid] = (pid, with_lxcfs, (time.perf_counter() - t0) * 1000)
        if (i + 1) % 100 == 0:
            log(f"{i + 1} VEs running")
    return started


def measure(args):
    Engine, VEConfig, Limits, _ = import_engine()
    from ve.kernel import lxcfs_mounts
    from ve.watch.lxcfs import LxcfsSupervisor
    ws = Workspace()  # mode 0711: VE root can traverse to the lxcfs mount inside
    engine = Engine(root=str(ws.path("ve")), cgroup_parent=f"{ws.cgroup_prefix}/ve")
    supervisor = LxcfsSupervisor(engine.layout, str(ws.path("lxcfs")))
    ws.on_cleanup(lambda: Path(supervisor.lock_path).unlink(missing_ok=True))
    ws.on_cleanup(supervisor.stop)
    ws.on_cleanup(lambda: [engine.destroy(v, timeout=2) for v in engine.layout.veids()])
    try:
        os.environ["VE_WATCH"] = "off"
        engine.template_build("busybox")
        if not supervisor.ensure():
            sys.exit("lxcfs did not start (is Debian's lxcfs package installed?)")
        lxcfs_pid = supervisor.pid()
        lxcfs_mounts.responds(supervisor.dir)
        before = lxcfs_usage(lxcfs_pid)
        ves = start_all(engine, VEConfig, Limits, args.count, supervisor.dir)
        with_ = [v for v, (_, on, _) in ves.items() if on]
        for veid in with_:
            assert engine.exec(veid, ["sh", "-c", TOUCH]).returncode == 0
        log(f"letting lxcfs settle for {args.settle:g} s")
        time.sleep(args.settle / 2)
        mid = lxcfs_usage(lxcfs_pid)
        time.sleep(args.settle / 2)
        after = lxcfs_usage(lxcfs_pid)
        mounts = extra_mounts(ves[FIRST_VEID][0], ves[FIRST_VEID + 1][0])
        latency = {}
        for path in FILES:
            on = read_inside(ves[FIRST_VEID][0], path, args.reads)
            off = read_inside(ves[FIRST_VEID + 1][0], path, args.reads)
            latency[path] = {"lxcfs": {**summary(on["us"]), "first_line": on["first_line"]},
                             "kernel": {**summary(off["us"]), "first_line": off["first_line"]}}
        # The VEs without lxcfs stand for another node's: this one would bind them.
        running = [(veid, ves[veid][0]) for veid in with_]
        check = _time_check(supervisor, running, rounds=5)
        recovery = _time_recovery(supervisor, running)
    finally:
        log("cleaning up")
        ws.cleanup()
    idle = max(after["cpu_s"] - mid["cpu_s"], 0.0)
    return {
        "count_each": args.count, "reads": args.reads, "settle_s": args.settle,
        "lxcfs_before": before, "lxcfs_after": after,
        "lxcfs_rss_kb_per_ve": (after["rss_kb"] - before["rss_kb"]) / len(with_),
        "lxcfs_pss_kb_per_ve": (after["pss_kb"] - before["pss_kb"]) / len(with_),
        "lxcfs_idle_core_share": idle / (args.settle / 2),
        "start_ms": {"lxcfs": summary([ms for _, on, ms in ves.values() if on]),
                     "kernel": summary([ms for _, on, ms in ves.values() if not on])},
        "extra_mounts_per_ve": mounts, "check_round": check, "recovery": recovery,
        "read_us": latency,
    }


def _time_check(supervisor, running, rounds):
    """Wall and CPU time of ``check`` over every running VE (all must be in order)."""
    wall, cpu = [], []
    for _ in range(rounds):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        c0, t0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
        done = supervisor.check(running)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append((usage.ru_utime + usage.ru_stime - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
        assert done["lxcfs"] == "ok" and not done["rebound"] and not done["failed"], done
    return {"ves": len(running), "wall_ms": statistics.median(wall),
            "cpu_ms": statistics.median(cpu)}


def _time_recovery(supervisor, running):
    """kill -9 of lxcfs, then the one check that restarts it and re-binds every VE."""
    pid = supervisor.pid()
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, 10.0)
    t0 = time.perf_counter()
    done = supervisor.check(running)
    wall = (time.perf_counter() - t0) * 1000
    assert done["lxcfs"] == "restarted" and len(done["rebound"]) == len(running), done
    assert not done["failed"], done
    return {"ves": len(running), "wall_ms": wall, "per_ve_ms": wall / len(running)}


def report(r):
    n = r["count_each"]
    print(f"\nLXCFS cost, {n} VEs with it and {n} without, one node, one run")
    print(f"lxcfs RSS {r['lxcfs_before']['rss_kb']} -> {r['lxcfs_after']['rss_kb']} kB: "
          f"{r['lxcfs_rss_kb_per_ve']:.1f} kB RSS, {r['lxcfs_pss_kb_per_ve']:.1f} kB PSS per VE")
    mounts = r["extra_mounts_per_ve"]
    print(f"kernel: {mounts['mounts']} more mounts per VE, {mounts['mnt_cache_bytes']} bytes "
          "of struct mount (dentries and inodes are lxcfs's, shared)")
    print(f"lxcfs CPU while idle: {100 * r['lxcfs_idle_core_share']:.2f}% of a core")
    start = r["start_ms"]
    print(f"start, median ms: {start['lxcfs']['median']:.2f} with lxcfs, "
          f"{start['kernel']['median']:.2f} without")
    print(f"check() over {r['check_round']['ves']} VEs: {r['check_round']['wall_ms']:.1f} ms "
          f"wall, {r['check_round']['cpu_ms']:.1f} ms CPU in the caller")
    rec = r["recovery"]
    print(f"after kill -9 of lxcfs: restart + re-bind of {rec['ves']} VEs in one check: "
          f"{rec['wall_ms']:.0f} ms ({rec['per_ve_ms']:.2f} ms per VE)")
    print(f"\n{'read inside a VE (µs)':24} {'lxcfs median':>13} {'p90':>8} "
          f"{'kernel median':>14} {'p90':>8}")
    for path, both in r["read_us"].items():
        on, off = both["lxcfs"], both["kernel"]
        print(f"{path:24} {on['median']:13.1f} {on['p90']:8.1f} {off['median']:14.1f} "
              f"{off['p90']:8.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100,
                        help="VEs with lxcfs (and as many without)")
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=12.0)
    parser.add_argument("--output", default=str(RESULTS_DIR / "lxcfs.json"))
    args = parser.parse_args(argv)
    require_root()
    with interrupts_as_exceptions():
        results = measure(args)
    report(results)
    write_json(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

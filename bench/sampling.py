#!/usr/bin/env python3
"""What usage sampling costs: N running VEs, sampled the way a node worker does.

Starts N busybox VEs (default 500; disk images, one routed address each, in
a network namespace of the benchmark's own), then times ``Engine.sample()``
(all VEs at once: one netlink dump, cgroup files, statfs) against the naive
per-VE collector a panel might write (``status`` + ``traffic`` + ``disk_usage``
per VE, a netlink socket each), side by side in one run. Reports CPU time
per round and the share of one core at a 30 s interval; writes
bench/results/sampling.json. Removes every VE, cgroup and file afterwards.

    .venv/bin/python bench/sampling.py [--count 500] [--rounds 5]
"""

import argparse
import ipaddress
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS_DIR, Workspace, import_engine, interrupts_as_exceptions,  # noqa: E402
                    log, require_root, write_json)

INTERVAL = 30.0
FIRST_VEID = 1000
NETWORK = ipaddress.ip_network("198.18.0.0/15")


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(collect, rounds):
    """CPU and wall seconds of each of ``rounds`` calls of ``collect``."""
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = cpu_seconds(), time.perf_counter()
        collect()
        cpu.append(cpu_seconds() - c0)
        wall.append(time.perf_counter() - w0)
    return {"cpu_s": cpu, "wall_s": wall, "cpu_median_s": statistics.median(cpu),
            "wall_median_s": statistics.median(wall),
            "core_share_at_30s": statistics.median(cpu) / INTERVAL}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=str(RESULTS_DIR / "sampling.json"))
    args = parser.parse_args(argv)
    require_root()
    if os.environ.get("VE_BENCH_NETNS") != "1":  # VE host sides land in a namespace of ours
        os.execvpe("unshare", ["unshare", "--net", sys.executable, *sys.argv],
                   dict(os.environ, VE_BENCH_NETNS="1"))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Engine, VEConfig, Limits, _ = import_engine()
    ws = Workspace()
    with interrupts_as_exceptions():
        try:
            engine = Engine(root=str(ws.path("ve")), cgroup_parent=f"{ws.cgroup_prefix}/ve")
            ws.on_cleanup(lambda: [engine.destroy(v, timeout=2) for v in engine.layout.veids()])
            engine.template_build("busybox")
            hosts = NETWORK.hosts()
            next(hosts)
            started = time.monotonic()
            for i in range(args.count):
                veid = FIRST_VEID + i
                engine.create(VEConfig(veid, f"ve{veid}.bench", "busybox",
                                       Limits(ram="64M", diskspace="64M", diskinodes=4096),
                                       ips=(str(next(hosts)),)))
                engine.start(veid)
                if (i + 1) % 100 == 0:
                    log(f"{i + 1} VEs running")
            log(f"{args.count} VEs started in {time.monotonic() - started:.0f} s")
            engine.sample()  # warm: imports, page cache

            def naive():
                for veid in engine.layout.veids():
                    engine.status(veid), engine.traffic(veid), engine.disk_usage(veid)

            results = {"count": args.count, "rounds": args.rounds, "interval_s": INTERVAL,
                       "sample": measure(engine.sample, args.rounds),
                       "naive": measure(naive, args.rounds)}
            assert len(engine.sample()["ves"]) == args.count
        finally:
            log("cleaning up")
            ws.cleanup()
    ours, naive_ = results["sample"], results["naive"]
    print(f"\nSampling {args.count} running VEs ({args.rounds} rounds, medians)")
    print(f"{'':34} {'CPU s/round':>12} {'wall s':>8} {'core share @30s':>16} {'x naive':>8}")
    for label, r in (("Engine.sample() (batched)", ours), ("per-VE status+traffic+disk", naive_)):
        print(f"{label:34} {r['cpu_median_s']:12.3f} {r['wall_median_s']:8.3f} "
              f"{100 * r['core_share_at_30s']:15.2f}% "
              f"{r['cpu_median_s'] / naive_['cpu_median_s']:8.2f}")
    write_json(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

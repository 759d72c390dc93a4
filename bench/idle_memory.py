#!/usr/bin/env python3
"""Host memory per idle container: ours vs crun vs LXC, at N = 100 and 500.

For each runtime and N: let the host settle, read /proc/meminfo (median of
three samples), note every PID on the host, start N idle busybox containers
(each with its own rootfs copy and uid range, as VEs have), let them settle,
read /proc/meminfo again and look at every new process:

  container processes  new processes inside the runtime's container cgroups
                       (a VE's init and whatever it runs)
  host-side helpers    new processes of the run outside them (LXC's monitor;
                       crun and the engine leave none)

Per container we report the MemAvailable drop, the process counts, their
PSS (from /proc/PID/smaps_rollup) and the part of the MemAvailable drop not
explained by the containers' own anonymous memory:

  beyond own = (MemAvailable drop - sum of container processes' Pss_Anon + Pss_Shmem) / N

i.e. kernel objects (namespaces, cgroups, page tables, kernel stacks, mounts)
plus host-side helpers. File-backed PSS is left out of that subtraction
because MemAvailable counts page cache (busybox's text) as available anyway.
Nothing is dropped from caches: every figure is a difference between two
readings a few seconds apart on the same host. Other activity on the host
shows up as noise; the number of unrelated new processes is recorded.

Run alone (``python bench/idle_memory.py --counts 100``) or through ``bench/run.py``.
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (all_pids, cmdline, interrupts_as_exceptions, log, meminfo,  # noqa: E402
                    proc_cgroup, pss)

FIRST_ID = 1000  # VEIDs (and uid range bases / 65536) of the memory benchmark
PEERS = ("api", "crun", "lxc")
KERNEL_FIELDS = ("SUnreclaim", "KernelStack", "PageTables", "Percpu")
MEMINFO_FIELDS = ("MemAvailable", "MemFree", "AnonPages", "Shmem", "Slab", "SUnreclaim",
                  "KernelStack", "PageTables", "Percpu")


def run(bench, counts=(100, 500), settle=3.0, repeats=3, seed=1):
    """Return per-runtime, per-N memory figures (medians over ``repeats`` readings)."""
    rng = random.Random(seed)
    peers = {name: bench.peers[name] for name in PEERS if name in bench.peers}
    prepared = {name: set() for name in peers}
    results = {}
    for count in sorted(counts):
        ids = list(range(FIRST_ID, FIRST_ID + count))
        for name, peer in peers.items():
            todo = [i for i in ids if i not in prepared[name]]
            if todo:
                log(f"memory: preparing {len(todo)} {name} containers")
                for ident in todo:
                    peer.prepare(ident)
                    prepared[name].add(ident)
        runs = {name: [] for name in peers}
        for rep in range(repeats):
            for name in rng.sample(list(peers), len(peers)):
                log(f"memory: N={count}, {name}, reading {rep + 1} of {repeats}")
                runs[name].append(measure(bench, peers[name], ids, settle))
        results[str(count)] = {name: _combine(readings) for name, readings in runs.items()}
    return {"counts": sorted(counts), "settle_s": settle, "repeats": repeats,
            "results": results}


def _combine(readings):
    """Median of each per-container figure over the readings; the readings themselves too."""
    def med(key, sub=None):
        values = [(r["per_container"][key] if sub is None else r["per_container"][key][sub])
                  for r in readings]
        return statistics.median(values)

    first = readings[0]
    per = {key: med(key) for key, value in first["per_container"].items()
           if not isinstance(value, dict)}
    per["kernel_kib"] = {f: med("kernel_kib", f) for f in first["per_container"]["kernel_kib"]}
    per["beyond_own_mib_spread"] = [min(r["per_container"]["beyond_own_mib"] for r in readings),
                                    max(r["per_container"]["beyond_own_mib"] for r in readings)]
    return {
        "requested": first["requested"],
        "started": min(r["started"] for r in readings),
        "error": next((r["error"] for r in readings if r["error"]), None),
        "start_total_s": statistics.median(r["start_total_s"] for r in readings),
        "stop_total_s": statistics.median(r["stop_total_s"] for r in readings),
        "processes": first["processes"],
        "per_container": per,
        "readings": readings,
    }


def _meminfo_sample(samples=3, gap=0.3):
    readings = []
    for i in range(samples):
        if i:
            time.sleep(gap)
        readings.append(meminfo())
    return {f: statistics.median(r[f] for r in readings) for f in MEMINFO_FIELDS}


def measure(bench, peer, ids, settle):
    count = len(ids)
    log(f"memory: {count} idle {peer.name} containers")
    time.sleep(settle)
    before = _meminfo_sample()
    pids_before = all_pids()
    started, error = [], None
    t0 = time.perf_counter()
    try:
        for ident in ids:
            peer.start(ident)
            started.append(ident)
    except KeyboardInterrupt:
        _stop_all(peer, started)
        raise
    except Exception as exc:
        error = f"start {len(started) + 1} of {count} failed: {exc}"
        log(f"memory: {peer.name}: {error}")
    start_s = time.perf_counter() - t0
    time.sleep(settle)
    after = _meminfo_sample()
    procs = _classify(bench, peer, all_pids() - pids_before)
    t0 = time.perf_counter()
    stop_error = _stop_all(peer, started)
    stop_s = time.perf_counter() - t0
    n = len(started) or 1
    delta = {f: before[f] - after[f] for f in MEMINFO_FIELDS}
    own = procs["container"]
    helpers = procs["helper"]
    own_anon = own["Pss_Anon"] + own["Pss_Shmem"]
    return {
        "requested": count, "started": len(started), "error": error, "stop_error": stop_error,
        "start_total_s": start_s, "stop_total_s": stop_s,
        "meminfo_before_kib": before, "meminfo_after_kib": after,
        "processes": procs,
        "per_container": {
            "mem_available_drop_mib": delta["MemAvailable"] / n / 1024,
            "container_processes": own["count"] / n,
            "helper_processes": helpers["count"] / n,
            "container_pss_mib": own["Pss"] / n / 1024,
            "container_pss_anon_mib": own_anon / n / 1024,
            "helper_pss_mib": helpers["Pss"] / n / 1024,
            "beyond_own_mib": (delta["MemAvailable"] - own_anon) / n / 1024,
            "kernel_kib": {f: -delta[f] / n for f in MEMINFO_FIELDS
                           if f not in ("MemAvailable", "MemFree")},
            # The same from the kernel's own counters, which other processes'
            # anonymous memory does not disturb: unreclaimable slab, kernel
            # stacks, page tables, per-cpu data, plus the helpers' anonymous PSS.
            "kernel_objects_mib": (-sum(delta[f] for f in KERNEL_FIELDS)
                                   + helpers["Pss_Anon"] + helpers["Pss_Shmem"]) / n / 1024,
        },
    }


def _classify(bench, peer, new_pids):
    """Sort new PIDs into container processes, host-side helpers and unrelated ones."""
    group = peer.container_group().rstrip("/") + "/"
    prefix = f"/{bench.ws.cgroup_prefix}/"
    workdir = str(bench.ws.dir)
    out = {kind: {"count": 0, "Rss": 0, "Pss": 0, "Pss_Anon": 0, "Pss_File": 0,
                  "Pss_Shmem": 0, "names": {}}
           for kind in ("container", "helper", "unrelated")}
    for pid in new_pids:
        path = proc_cgroup(pid)
        if path is None:
            continue  # gone meanwhile
        if path.startswith(group):
            kind = "container"
        elif path.startswith(prefix) or workdir in cmdline(pid):
            kind = "helper"
        else:
            kind = "unrelated"
        bucket = out[kind]
        bucket["count"] += 1
        name = (cmdline(pid).split() or ["?"])[0]
        bucket["names"][name] = bucket["names"].get(name, 0) + 1
        if kind != "unrelated":
            for field, value in pss(pid).items():
                bucket[field] += value
    return out


def _stop_all(peer, ids):
    errors = []
    for ident in ids:
        try:
            peer.stop_fast(ident)
        except Exception as exc:
            errors.append(f"{ident}: {exc}")
    if errors:
        log(f"memory: {peer.name}: {len(errors)} stops failed, first: {errors[0]}")
    return errors[:5] or None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,500",
                        help="comma-separated numbers of idle containers (default 100,500)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to let the host settle before each reading")
    parser.add_argument("--repeats", type=int, default=3,
                        help="readings per runtime and N (the median is reported)")
    args = parser.parse_args(argv)
    from peers import Bench
    import report
    counts = [int(c) for c in args.counts.split(",") if c]
    with interrupts_as_exceptions(), Bench(want_floor=False) as bench:
        result = run(bench, counts, args.settle, args.repeats)
    print(report.memory_tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

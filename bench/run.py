#!/usr/bin/env python3
"""The whole benchmark in one run: start/stop latency, then idle memory.

Installs crun, lxc and busybox-static if missing (apt-get), builds the
busybox template in a throw-away VE_ROOT, measures ours (Python API and
vectl CLI) against crun and LXC on the same rootfs, prints tables, writes
bench/results/latest.json and the results section of bench/README.md, and
removes every container, cgroup and file it made, also on Ctrl-C or failure.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import idle_memory  # noqa: E402
import report  # noqa: E402
import start_stop  # noqa: E402
from common import (BENCH_DIR, RESULTS_DIR, interrupts_as_exceptions, log,  # noqa: E402
                    machine, write_json)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per runtime and condition")
    parser.add_argument("--idle-ms", type=float, default=50,
                        help="pause before each timed operation in the idle condition")
    parser.add_argument("--clean-runs", type=int, default=5, help="timed clean stops per runtime")
    parser.add_argument("--counts", default="100,500",
                        help="numbers of idle containers for the memory benchmark ('' = skip)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to let the host settle around memory readings")
    parser.add_argument("--mem-repeats", type=int, default=3,
                        help="memory readings per runtime and N (the median is reported)")
    parser.add_argument("--skip-start-stop", action="store_true")
    parser.add_argument("--no-floor", action="store_true", help="skip the C kernel floor")
    parser.add_argument("--output", default=str(RESULTS_DIR / "latest.json"))
    parser.add_argument("--no-readme", action="store_true",
                        help="do not rewrite the results section of bench/README.md")
    parser.add_argument("--queue-wait", action="store_true",
                        help="then the dashboard's queue-wait benchmark (bench/queue_wait.py, "
                             "~4 min): operations' wait while the node samples 500 VEs")
    parser.add_argument("--migration", action="store_true",
                        help="then the live vs offline migration benchmark (bench/migration.py, "
                             "~4 min): two nodes on this machine, VEs dirtying 64 and 256 MiB")
    parser.add_argument("--evacuation", action="store_true",
                        help="then the node evacuation benchmark (bench/evacuation.py): the "
                             "whole product evacuates a node of 50 busybox VPSes")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]

    from peers import Bench
    started = time.time()
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
               "command": "python bench/run.py "
                          + " ".join(argv if argv is not None else sys.argv[1:]),
               "config": vars(args)}
    with interrupts_as_exceptions(), Bench(want_floor=not args.no_floor) as bench:
        results["machine"] = machine(bench.vectl)
        results["engine"] = _engine_version()
        results["host_load"] = {"before": _load()}
        if not args.skip_start_stop:
            results["start_stop"] = start_stop.run(bench, args.runs, args.idle_ms,
                                                   args.clean_runs)
            print(report.start_stop_tables(results["start_stop"]), flush=True)
        if counts:
            results["idle_memory"] = idle_memory.run(bench, counts, args.settle, args.mem_repeats)
            print(report.memory_tables(results["idle_memory"]), flush=True)
        results["host_load"]["after"] = _load()
    results["wall_s"] = time.time() - started
    results["goals"] = report.goals(results.get("start_stop"), results.get("idle_memory"))
    print("\nGoals\n" + report.goal_lines(results["goals"]))
    write_json(args.output, results)
    log(f"results in {args.output}")
    if not args.no_readme:
        report.update_readme(BENCH_DIR / "README.md", report.markdown(results))
        log("results section of bench/README.md updated")
    if args.queue_wait:
        import queue_wait
        queue_wait.main([])
    if args.migration:
        import migration
        migration.main([])
    if args.evacuation:
        import evacuation
        return evacuation.main([])  # 1 if a move failed or something was left behind
    return 0


def _engine_version():
    """Which engine code was measured: a hash of ve/**/*.py (the tree has no commits yet)."""
    import hashlib
    import subprocess
    repo = BENCH_DIR.parent
    digest = hashlib.sha256()
    files = sorted((repo / "ve").rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    return {"ve_sources_sha256": digest.hexdigest()[:16], "files": len(files),
            "git_head": head or None}


def _load():
    """Load average and process count: how busy the (shared) host was."""
    loadavg = Path("/proc/loadavg").read_text().split()
    return {"loadavg_1m": float(loadavg[0]), "loadavg_5m": float(loadavg[1]),
            "processes": sum(1 for n in Path("/proc").iterdir() if n.name.isdigit())}


if __name__ == "__main__":
    sys.exit(main())

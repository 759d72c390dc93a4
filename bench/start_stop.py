#!/usr/bin/env python3
"""Start/stop latency of a detached busybox container: ours (API, CLI) vs crun vs LXC.

Each iteration starts and kills one container of every runtime, in a fresh
random order (fixed seed) each time, so that drift (other load, page cache)
hits every runtime alike and no runtime always follows the same other one.
Two conditions:

  idle  the host sleeps ``--idle-ms`` (50) before every timed operation, so a
        cgroup v1 migration pays the RCU grace period a quiet host pays
  b2b   back to back: each timed start directly follows an untimed
        start + kill of the same runtime, and the kill follows the start,
        with no pause anywhere

Clean stops (the init's own shutdown; busybox init needs ~1-2 s by design)
are timed separately, ``--clean-runs`` times, idle only.

Run alone (``python bench/start_stop.py``) or through ``bench/run.py``.
"""

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interrupts_as_exceptions, log, summary  # noqa: E402

# Container id of each runtime in this benchmark (its VEID / uid range base / 65536).
IDS = {"api": 101, "cli": 102, "crun": 103, "lxc": 104, "floor": 105, "floor_tasks": 106,
       "image": 107, "net_api": 111, "net_cli": 112, "net_crun": 113, "net_lxc": 114}
ORDER = ("api", "image", "cli", "crun", "lxc", "floor", "floor_tasks",
         "net_api", "net_cli", "net_crun", "net_lxc")
# The networked rows compare with the faster of these two peers (in each condition).
NET_PEERS = ("net_crun", "net_lxc")
CLEAN_SETTLE = 0.5  # s between start and clean stop: init must have set its handlers
MAX_ERRORS = 3


def run(bench, runs=30, idle_ms=50, clean_runs=5, modes=("idle", "b2b"), warmup=2, seed=1,
        only=None):
    """Return the samples (ms) and their summaries for every runtime and condition
    (``only``: these runtimes' names alone)."""
    rng = random.Random(seed)
    peers = {name: bench.peers[name] for name in ORDER
             if name in bench.peers and (not only or name in only)}
    for name, peer in peers.items():
        peer.prepare(IDS[name])
    errors = {name: [] for name in peers}
    log(f"start/stop: warm-up ({warmup} rounds)")
    for _ in range(warmup):
        for name, peer in peers.items():
            _cycle(peer, IDS[name], 0, errors[name])

    samples = {}
    for mode in modes:
        pause = idle_ms / 1000 if mode == "idle" else 0
        samples[mode] = {name: {"start": [], "stop": []} for name in peers}
        log(f"start/stop: {runs} rounds, {mode}")
        for _ in range(runs):
            for name in rng.sample(list(peers), len(peers)):
                if len(errors[name]) >= MAX_ERRORS:
                    continue
                if mode == "b2b":  # the primer: this runtime's own previous start/kill
                    _cycle(peers[name], IDS[name], 0, errors[name])
                result = _cycle(peers[name], IDS[name], pause, errors[name])
                if result:
                    samples[mode][name]["start"].append(result[0])
                    if result[1] is not None:
                        samples[mode][name]["stop"].append(result[1])

    clean = {name: [] for name, p in peers.items() if p.has_clean_stop}
    if clean_runs:
        log(f"start/stop: {clean_runs} clean stops per runtime")
    for _ in range(clean_runs):
        for name in rng.sample(list(clean), len(clean)):
            if len(errors[name]) >= MAX_ERRORS:
                continue
            peer, ident = peers[name], IDS[name]
            try:
                peer.start(ident)
                time.sleep(CLEAN_SETTLE)
                clean[name].append(peer.stop_clean(ident))
            except Exception as exc:
                _failed(peer, ident, exc, errors[name])
            time.sleep(idle_ms / 1000)

    return {
        "runs": runs, "idle_ms": idle_ms, "seed": seed, "clean_runs": clean_runs,
        "modes": list(modes),
        "labels": {name: peer.label for name, peer in peers.items()},
        "samples": samples, "clean_samples": clean,
        "summary": summarise(samples, clean),
        "errors": {name: errs for name, errs in errors.items() if errs},
        "crun_delete_retries": getattr(bench.peers.get("crun"), "delete_retries", 0),
    }


def _cycle(peer, ident, pause, errors):
    """Start then fast-stop ``ident``; return (start ms, stop ms) or None on failure."""
    try:
        time.sleep(pause)
        started = peer.start(ident)
        time.sleep(pause)
        stopped = peer.stop_fast(ident)
        return started, stopped
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        _failed(peer, ident, exc, errors)
        return None


def _failed(peer, ident, exc, errors):
    log(f"{peer.name}: {exc}")
    errors.append("".join(traceback.format_exception_only(exc)).strip())
    try:  # leave nothing running for the next round
        peer.stop_fast(ident)
    except Exception:
        pass


def summarise(samples, clean):
    """Median/p90 per runtime, operation and condition, with ratios to crun's median
    (networked rows: to the best networked peer's median, ``ratio_to_best_peer``)."""
    out = {}
    for mode, by_peer in samples.items():
        out[mode] = {}
        for op in ("start", "stop"):
            crun = summary(by_peer.get("crun", {}).get(op, []))
            best = _best_peer(by_peer, op)
            for name, ops in by_peer.items():
                s = summary(ops[op])
                if s and crun:
                    s["ratio_to_crun"] = s["median"] / crun["median"]
                if s and best and name.startswith("net_"):
                    s["ratio_to_best_peer"] = s["median"] / best["median"]
                    s["best_peer"] = best["name"]
                out[mode].setdefault(name, {})[op] = s
    crun = summary(clean.get("crun", []))
    best = _best_peer({name: {"stop": values} for name, values in clean.items()}, "stop")
    out["clean"] = {}
    for name, values in clean.items():
        s = summary(values)
        if s and crun:
            s["ratio_to_crun"] = s["median"] / crun["median"]
        if s and best and name.startswith("net_"):
            s["ratio_to_best_peer"] = s["median"] / best["median"]
            s["best_peer"] = best["name"]
        out["clean"][name] = {"stop": s}
    return out


def _best_peer(by_peer, op):
    """The summary (with its "name") of the networked peer with the lowest median."""
    found = [dict(s, name=name) for name in NET_PEERS
             if (s := summary(by_peer.get(name, {}).get(op, [])))]
    return min(found, key=lambda s: s["median"], default=None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--idle-ms", type=float, default=50)
    parser.add_argument("--clean-runs", type=int, default=5)
    parser.add_argument("--no-floor", action="store_true", help="skip the C kernel floor")
    parser.add_argument("--only", default="",
                        help="comma-separated runtimes, e.g. net_api,net_crun,net_lxc "
                             f"(default: all of {', '.join(ORDER)})")
    args = parser.parse_args(argv)
    from peers import Bench
    import report
    with interrupts_as_exceptions(), Bench(want_floor=not args.no_floor) as bench:
        result = run(bench, args.runs, args.idle_ms, args.clean_runs,
                     only=[name for name in args.only.split(",") if name])
    print(report.start_stop_tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

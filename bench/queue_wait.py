#!/usr/bin/env python3
"""How long lifecycle operations wait in the queue while the node samples N VEs.

Runs the whole product (tests/livestack.py: Redis, the node's root workers,
housekeeping, gunicorn) on throw-away state, orders a few busybox VPSes
through the API, then adds N more real, running busybox VEs (directory
layout, no network, started without the node watcher to save time) known to
the dashboard as VPSes of the node, so that every round of usage sampling,
traffic counting and reconcile works through all of them. Then, once per
layout, a customer stops and starts the VPSes (``--ops`` operations,
one every ``--interval`` s) and each operation's queue wait (started -
created, from the API) is recorded:

- ``split`` (now): operations have the worker ``node.<name>`` to themselves;
  sampling, traffic and reconcile run in the chores worker.
- ``shared`` (before): one worker, two slots, both queues.

Writes bench/results/queue_wait.json.

    .venv/bin/python bench/queue_wait.py [--ves 500] [--ops 30] [--interval 2]
"""

import argparse
import json
import os
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import RESULTS_DIR, log, require_root, write_json  # noqa: E402

FIRST_FILLER = 2000


def p95(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def epoch(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def add_fillers(live, count):
    """``count`` running busybox VEs that the dashboard knows as VPSes of the node."""
    import django
    os.environ.update(HOSTING_DATA_DIR=str(live.data_dir), HOSTING_REDIS_URL=live.stack.redis_url,
                      DJANGO_SETTINGS_MODULE="hosting.settings")
    login = live.stack.control_env("web")  # its Redis login (the cache), not its signing key
    os.environ.update({k: v for k, v in login.items() if k.startswith("HOSTING_REDIS_")})
    django.setup()
    from hosting.customers.models import Customer
    from hosting.environments.models import OSTemplate
    from hosting.environments.models import VirtualEnvironment as VE
    from hosting.nodes.models import Node
    from hosting.operations.runners import config_of
    from hosting.plans.models import Plan
    from tests.livestack import NODE
    owner = Customer.objects.get(user__username="demo")
    plan, template = Plan.objects.get(name="VPS S"), OSTemplate.objects.get(name="busybox")
    node = Node.objects.get(name=NODE)
    rows = VE.objects.bulk_create(
        VE(veid=FIRST_FILLER + i, owner=owner, plan=plan, node=node, template=template,
           hostname=f"fill{i}.bench.example", desired_state="running", actual_state="running")
        for i in range(count))
    engine = live.engine()
    began = time.monotonic()
    for i, ve in enumerate(rows):
        engine.create(config_of(ve)._replace(layout="dir"))
        engine.start(ve.veid)
        if (i + 1) % 100 == 0:
            log(f"{i + 1} filler VEs running")
    log(f"{count} filler VEs started in {time.monotonic() - began:.0f} s")


def run_load(live, veids, ops, interval):
    """Stop/start the VPSes, one operation every ``interval`` s; return the final ops."""
    api = live.api("demo")
    action = {veid: "stop" if api.get(f"/api/v1/environments/{veid}/")["actual_state"] ==
              "running" else "start" for veid in veids}
    pending, submitted = {}, []
    next_at = time.monotonic()
    while len(submitted) < ops:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        for veid in veids:  # the next VPS that has nothing unfinished
            if veid in pending and api.get(f"/api/v1/operations/{pending[veid]}/")["state"] \
                    not in ("succeeded", "failed"):
                continue
            op = api.post(f"/api/v1/environments/{veid}/{action[veid]}/")
            pending[veid] = op["id"]
            submitted.append(op)
            action[veid] = "start" if action[veid] == "stop" else "stop"
            break
    return [api.wait_operation(op, timeout=300) for op in submitted]


def switch_layout(live, layout):
    """Run the node's workers in ``layout`` (split or shared) from now on."""
    stack = live.stack
    stack.stop_process("node-worker")
    stack.stop_process("node-chores")
    log_file = live.data_dir / "log" / "node-worker.log"
    ready = log_file.read_text().count(" ready.")
    if layout == "shared":
        stack.start_node_worker(shared=True)
    else:
        stack.start_node_worker()
        stack.start_node_chores()
    deadline = time.monotonic() + 60
    while log_file.read_text().count(" ready.") <= ready:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {layout} node worker did not start")
        time.sleep(0.2)
    time.sleep(5)  # let a round of chores begin


def chores_seen(live, since):
    """Durations of the chores that ran since byte offset ``since`` of each worker log."""
    seen = {}
    for name in ("node-worker", "node-chores"):
        path = live.data_dir / "log" / f"{name}.log"
        if not path.exists():
            continue
        text = path.read_text()[since.get(name, 0):]
        for task, seconds in re.findall(r"tasks\.(sample_node|collect_traffic|reconcile_node)"
                                        r"\[[^\]]+\] succeeded in ([0-9.]+)s", text):
            seen.setdefault(task, []).append(float(seconds))
    return {task: {"count": len(v), "median_s": round(statistics.median(v), 2),
                   "max_s": round(max(v), 2)} for task, v in seen.items()}


def log_sizes(live):
    return {n: (live.data_dir / "log" / f"{n}.log").stat().st_size
            for n in ("node-worker", "node-chores")
            if (live.data_dir / "log" / f"{n}.log").exists()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ves", type=int, default=500, help="filler VEs the node samples")
    parser.add_argument("--vpses", type=int, default=4, help="VPSes the customer operates")
    parser.add_argument("--ops", type=int, default=30, help="operations per layout")
    # A stop takes ~4 s (busybox init's clean shutdown): one every 2 s keeps the two
    # slots busy about half the time, so that operations rarely wait for each other.
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between operations")
    parser.add_argument("--heartbeat", type=float, default=2.0,
                        help="node heartbeat (s): reconcile and traffic every 6 beats")
    parser.add_argument("--sample", type=float, default=4.0, help="usage sampling interval (s)")
    parser.add_argument("--layouts", default="split,shared")
    parser.add_argument("--output", default=str(RESULTS_DIR / "queue_wait.json"))
    args = parser.parse_args(argv)
    require_root()
    os.environ.update(VE_WATCH="off", VE_LXCFS="off")  # the fillers: sampling load only
    from tests.livestack import LiveStack, new_cgroup_top
    live = LiveStack(new_cgroup_top())
    live.stack.extra_env.update(HOSTING_HEARTBEAT_SECONDS=str(args.heartbeat),
                                HOSTING_SAMPLE_SECONDS=str(args.sample))
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": vars(args), "layouts": {}}
    try:
        live.start()
        customer = live.api("demo")
        orders = [customer.post("/api/v1/environments/", {
            "plan": "VPS S", "template": "busybox", "hostname": f"bench{i}.example.com",
            "root_password": "correct-horse-1"}) for i in range(args.vpses)]
        veids = [customer.wait_operation(op, timeout=300)["veid"] for op in orders]
        add_fillers(live, args.ves)
        for layout in args.layouts.split(","):
            switch_layout(live, layout)
            log(f"layout {layout}: {args.ops} operations, one every {args.interval} s")
            offsets = log_sizes(live)
            began = time.monotonic()
            ops = run_load(live, veids, args.ops, args.interval)
            waits = [epoch(o["started"]) - epoch(o["created"]) for o in ops]
            results["layouts"][layout] = {
                "waits_s": waits, "p50_s": statistics.median(waits), "p95_s": p95(waits),
                "max_s": max(waits), "failed": sum(o["state"] != "succeeded" for o in ops),
                "wall_s": time.monotonic() - began, "chores": chores_seen(live, offsets)}
            log(f"layout {layout}: p50 {statistics.median(waits):.2f} s, p95 {p95(waits):.2f} s, "
                f"max {max(waits):.2f} s; chores {results['layouts'][layout]['chores']}")
    finally:
        log("cleaning up")
        live.stop()
    report(results)
    write_json(args.output, results)
    return 0


def report(results):
    cfg, rows = results["config"], results["layouts"]
    print(f"\nQueue wait of lifecycle operations (started - created) while the node samples "
          f"{cfg['ves']} running VEs every {cfg['sample']} s (reconcile and traffic every "
          f"{6 * cfg['heartbeat']:g} s); {cfg['ops']} stop/start operations per layout")
    print(f"{'layout':34} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'failed':>7}")
    labels = {"split": "split: operations worker of their own",
              "shared": "shared: one pool (before)"}
    for layout, r in rows.items():
        print(f"{labels.get(layout, layout):34} {r['p50_s']:7.2f} {r['p95_s']:7.2f} "
              f"{r['max_s']:7.2f} {r['failed']:7d}")
    if "split" in rows and "shared" in rows:
        ratio = rows["shared"]["p95_s"] / max(rows["split"]["p95_s"], 1e-3)
        print(f"p95 before / now: {ratio:.1f}x")
    print("chores observed (count, median and max seconds):")
    for layout, r in rows.items():
        print(f"  {layout}: {json.dumps(r['chores'])}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What the staff node graph and a VPS's graph cost for a node of M VEs, every range.

Builds the fleet as bench/reports.py does (N nodes of M VEs, --days of hourly
rollups, --five-minute-days of 5-minute ones: COPY on PostgreSQL), adds each
node's own rollups and an hour of raw samples (30 s apart) of the first node
and its VEs, and times, per range (1 h, 24 h, 7 d, 30 d), cold (empty cache)
and warm (median of --rounds): the node graph computed from the rollups, the
node graph as the API answers it, and a VPS's graph (function and API); and,
when graphs.py stores node series, what housekeeping spends storing them and
whether the answers equal the straightforward computation's; with --before,
graphs.py as it was, on the same data in the same run.
Writes bench/results/node-graph-<database>[-<label>].json.

    .venv/bin/python bench/node_graph.py [--nodes 1] [--ves 1000] [--days 30]
        [--five-minute-days 7] [--rounds 5] [--postgres] [--label after]
        [--before /tmp/graphs_before.py]
"""

import argparse
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.append(str(ROOT / "tests"))  # staffing.py, on_postgres.py

RANGES = ("1h", "24h", "7d", "30d")
NODE_ROLLUP_COLUMNS = ("node_id", "resolution", "time", "samples", "ram_used_avg",
                       "cpu_avg")
SAMPLE_COLUMNS = ("environment_id", "time", "ram", "ram_cache", "swap", "processes", "disk",
                  "inodes", "cpu_ns", "rx_bytes", "tx_bytes")
NODE_SAMPLE_COLUMNS = ("node_id", "time", "cpu_busy_ns", "cpus", "ram_used", "ram_total",
                       "swap_used", "disk_used", "disk_total", "load1")


def copy_rows(model, columns, rows):
    """Insert ``rows`` (tuples of ``columns``) into ``model``'s table: COPY on
    PostgreSQL, bulk_create elsewhere."""
    from django.db import connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor, cursor.cursor.copy(
                f"COPY {model._meta.db_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    model.objects.bulk_create((model(**dict(zip(columns, row))) for row in rows),
                              batch_size=20000)


def add_node_rollups(nodes, days, five_minute_days, now):
    """Each node's own hourly and 5-minute rollups, as the VEs' span them."""
    from hosting.usage.models import NodeRollup

    def rows():
        for resolution, count in ((3600, days * 24), (300, five_minute_days * 288)):
            for node in nodes:
                for step in range(count):
                    moment = now - timedelta(seconds=resolution * (step + 1))
                    yield (node.pk, resolution, moment, 10, float(1 << 38), 12.5)
    copy_rows(NodeRollup, NODE_ROLLUP_COLUMNS, rows())


def add_raw_hour(node, envs, now, minutes=63):
    """``minutes`` of raw samples 30 s apart of ``node`` and its VEs, counters rising
    (so each interval has a CPU rate)."""
    from hosting.usage.models import NodeSample, UsageSample
    mine = [ve for ve in envs if ve.node_id == node.pk]
    steps = range(minutes * 2, -1, -1)

    def samples():
        for back in steps:
            moment = now - timedelta(seconds=30 * back)
            for ve in mine:
                tick = minutes * 2 - back
                yield (ve.pk, moment, 1 << 28, 1 << 26, 0, 12, 2 << 30, 30000,
                       10**11 + tick * 15 * 10**8 + ve.pk, 10**9 + tick * 1000, 10**9)

    def node_samples():
        for back in steps:
            moment = now - timedelta(seconds=30 * back)
            yield (node.pk, moment, 10**12 + (minutes * 2 - back) * 300 * 10**9, node.cpus,
                   1 << 38, node.ram_bytes, 0, 1 << 40, node.disk_bytes, 1.5)
    copy_rows(UsageSample, SAMPLE_COLUMNS, samples())
    copy_rows(NodeSample, NODE_SAMPLE_COLUMNS, node_samples())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--ves", type=int, default=1000, help="per node")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--five-minute-days", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="", help="suffix of the results file")
    parser.add_argument("--before", metavar="PATH",
                        help="graphs.py as it was, timed in the same run (git show "
                             "HEAD:hosting/usage/graphs.py > PATH)")
    parser.add_argument("--postgres", action="store_true",
                        help="in a throw-away PostgreSQL cluster (as tests/on_postgres.py)")
    args = parser.parse_args()
    from reports import on_a_fresh_database
    return on_a_fresh_database(bench, args)


def bench(args):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hosting.settings")
    import django
    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from reports import build
    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    nodes, _, envs = build(args.nodes, args.ves, args.days, args.five_minute_days)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    add_node_rollups(nodes, args.days, args.five_minute_days, now)
    add_raw_hour(nodes[0], envs, timezone.now())
    if connection.vendor == "postgresql":  # statistics as autovacuum would have them
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    else:
        from hosting.usage import collection
        collection.analyze()
    print(f"built {args.nodes} nodes x {args.ves} VEs, {args.days} d hourly, "
          f"{args.five_minute_days} d 5-minute in {time.perf_counter() - start:.0f} s",
          flush=True)
    run(nodes, envs, args)


def run(nodes, envs, args):
    from django.db import connection
    from django.test import Client

    from common import RESULTS_DIR, write_json
    from hosting.usage import graphs
    from reports import once, timed
    from staffing import make_staff, verified_login  # tests/staffing.py
    client = verified_login(Client(), make_staff("staff"))
    node, ve = nodes[0], next(ve for ve in envs if ve.node_id == nodes[0].pk)
    out = {"nodes": args.nodes, "ves_per_node": args.ves, "days": args.days,
           "five_minute_days": args.five_minute_days, "rounds": args.rounds}

    def api(path):
        response = client.get(path)
        assert response.status_code == 200, response.status_code
    api("/api/v1/nodes/")  # a process's first request sets up the URLs and views
    before = load_before(args.before) if args.before else None
    if before is not None:  # the code before, on the same data in the same run
        for span in RANGES:
            timed(f"node graph {span}, before", lambda: before.node_usage(node, span),
                  args.rounds, out)
        for span in RANGES:
            timed(f"VPS graph {span}, before", lambda: before.usage(ve, span), args.rounds,
                  out)
    # The straightforward computation: the node's rollups summed per request.
    compute = getattr(graphs, "compute_node_usage", graphs.node_usage)
    for span in RANGES:
        timed(f"node graph {span}, computed", lambda: compute(node, span), args.rounds, out)
    store = getattr(graphs, "store_node_usage", None)
    if store is not None:  # housekeeping's part, then what a read finds stored
        once("housekeeping: store node series, nothing stored", store, out)
        timed("housekeeping: store node series, all current", store, args.rounds, out)
        out["identical"] = same_answers(graphs, node, before)
        print(f"answer vs computed (and before): {out['identical']}", flush=True)
    for span in RANGES:
        timed(f"node graph {span}, function", lambda: graphs.node_usage(node, span),
              args.rounds, out)
        timed(f"node graph {span}, API", lambda: api(
            f"/api/v1/nodes/{node.pk}/usage/?range={span}"), args.rounds, out)
    for span in RANGES:
        timed(f"VPS graph {span}, function", lambda: graphs.usage(ve, span), args.rounds, out)
        timed(f"VPS graph {span}, API", lambda: api(
            f"/api/v1/environments/{ve.veid}/usage/?range={span}"), args.rounds, out)
    out["database"] = connection.vendor
    suffix = f"-{args.label}" if args.label else ""
    write_json(RESULTS_DIR / f"node-graph-{connection.vendor}{suffix}.json", out)


def same_answers(graphs, node, before=None):
    """Per range, whether the answer equals the straightforward computation's (same now):
    "equal", "rounding" (PostgreSQL sums floats in parallel, in no fixed order: two
    straightforward computations differ so too) or "different". With ``before`` (the
    graphs module before), its answer is compared too."""
    from django.utils import timezone
    now = timezone.now()
    out = {}
    for span in RANGES:
        answer = graphs.node_usage(node, span, now=now)
        wanted = [graphs.compute_node_usage(node, span, now=now)]
        if before is not None:
            wanted.append(before.node_usage(node, span, now=now))
        out[span] = ["equal" if answer == other else "rounding" if close(answer, other)
                     else "different" for other in wanted]
    return out


def close(a, b):
    """Equal but for float rounding (relative 1e-9)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(close, a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def load_before(path):
    """The graphs module as it was (``git show HEAD:hosting/usage/graphs.py``)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("hosting.usage.graphs_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main())

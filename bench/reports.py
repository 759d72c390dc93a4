#!/usr/bin/env python3
"""What the usage reports, placement and /metrics cost on a full fleet: N nodes of M
VEs each (default one node of 500) with a month of hourly rollups, a day of
5-minute ones and a few rounds of raw samples, in a throw-away database: SQLite,
PostgreSQL at DATABASE_URL, or (--postgres) a throw-away PostgreSQL cluster.

Times, cold (empty cache) and warm (median of --rounds): what hourly
housekeeping computes and stores (capacity.refresh and the period figures the
overcommit page reads), one placement decision (choose_node), the overcommit
page (every table) cold with the stored figures and cold without them,
/metrics for one node and for the fleet, the node graph and a VPS graph for
24 h / 7 d / 30 d. Writes bench/results/reports-<database>.json.

    .venv/bin/python bench/reports.py [--nodes 1] [--ves 500] [--days 30] [--rounds 3]
        [--postgres] [--compare-p95]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.append(str(ROOT / "tests"))  # staffing.py, on_postgres.py (after: tests/hosting)


def timed(label, call, rounds, out):
    """Cold: with an empty cache (the first view after new hourly rollups); warm: the
    median of ``rounds`` more."""
    from django.core.cache import cache
    cache.clear()
    start = time.perf_counter()
    call()
    cold = time.perf_counter() - start
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    out[label] = {"cold_s": cold, "warm_median_s": statistics.median(seconds), "warm_s": seconds}
    print(f"{label:<40} cold {cold * 1000:8.1f} ms   "
          f"warm {statistics.median(seconds) * 1000:8.1f} ms",
          flush=True)


def build(nodes, ves, days, five_minute_days=1):
    """``nodes`` nodes of ``ves`` VEs each on 5 plans, each VE with ``days`` of hourly
    rollups and ``five_minute_days`` of 5-minute ones."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from hosting.customers.models import Customer
    from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
    from hosting.nodes.models import Node
    from hosting.plans.models import Plan
    made = [Node.objects.create(name=f"bench{n}", state="online", ram_bytes=1 << 40, cpus=64,
                                disk_bytes=40 << 40, ram_overcommit=Decimal("3"),
                                cpu_overcommit=Decimal("20")) for n in range(nodes)]
    owner = Customer.objects.create(user=User.objects.create_user("bench"))
    template = OSTemplate.objects.create(name="busybox", title="BusyBox")
    plans = [Plan.objects.create(name=f"P{mb}", ram_mb=mb, cpus=1, disk_gib=10,
                                 monthly_price=Decimal("1")) for mb in (256, 512, 1024, 2048, 4096)]
    envs = VE.objects.bulk_create(
        (VE(veid=1000 + i, owner=owner, plan=plans[i % 5], node=made[i // ves],
            template=template, hostname=f"b{i}.example.com", actual_state="running")
         for i in range(nodes * ves)), batch_size=5000)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    insert_rollups(rollup_rows(envs, days, now, five_minute_days))
    return made, plans, envs


ROLLUP_COLUMNS = ("environment_id", "resolution", "time", "samples", "limit_hits", "oom_kills",
                  "conntrack_refused", "ram_avg", "ram_max", "cpu_avg", "cpu_max", "disk_max",
                  "rx_avg", "tx_avg")


def rollup_rows(envs, days, now, five_minute_days=1):
    """Tuples of ROLLUP_COLUMNS: each VE's RAM at a quarter of its plan, three quarters
    one hour a day (a different hour for each VE)."""
    for resolution, count in ((3600, days * 24), (300, five_minute_days * 288)):
        moments = [now - timedelta(seconds=resolution * (step + 1)) for step in range(count)]
        for ve in envs:
            ram = ve.plan.ram_mb * (1 << 20)
            for step, moment in enumerate(moments):
                share = 0.25 + 0.5 * ((step + ve.veid) % 24 == 0)
                yield (ve.pk, resolution, moment, 10, 0, 0, 0, ram * share, 0.0, 0.05, 0.2,
                       float(2 << 30), 10.0, 10.0)


def insert_rollups(rows):
    """Insert ``rows`` (ROLLUP_COLUMNS): COPY on PostgreSQL (10 M rows in a minute or so,
    several times faster than bulk_create), bulk_create elsewhere."""
    from django.db import connection

    from hosting.usage.models import UsageRollup
    if connection.vendor == "postgresql":
        table = UsageRollup._meta.db_table
        with connection.cursor() as cursor, cursor.cursor.copy(
                f"COPY {table} ({', '.join(ROLLUP_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    batch = []
    for row in rows:
        batch.append(UsageRollup(**dict(zip(ROLLUP_COLUMNS, row))))
        if len(batch) >= 50000:
            UsageRollup.objects.bulk_create(batch)
            batch = []
    UsageRollup.objects.bulk_create(batch)


def add_samples(nodes, envs, rounds=3):
    """``rounds`` raw sample rounds, 30 s apart up to now, of ``nodes`` and their VEs
    (what /metrics reads)."""
    from django.utils import timezone

    from hosting.usage.models import NodeSample, UsageSample
    now = timezone.now()
    wanted = {node.pk for node in nodes}
    for back in range(rounds):
        moment = now - timedelta(seconds=30 * back)
        NodeSample.objects.bulk_create(
            NodeSample(node=node, time=moment, cpu_busy_ns=10**12, cpus=node.cpus,
                       ram_used=1 << 38, ram_total=node.ram_bytes, swap_used=0,
                       disk_used=1 << 40, disk_total=node.disk_bytes, load1=1.5)
            for node in nodes)
        UsageSample.objects.bulk_create(
            (UsageSample(environment_id=ve.pk, time=moment, ram=1 << 28, ram_cache=1 << 26,
                         swap=0, processes=12, disk=2 << 30, inodes=30000, cpu_ns=10**11,
                         rx_bytes=10**9, tx_bytes=10**9, rx_packets=10**6, tx_packets=10**6,
                         io_read_bytes=10**9, io_write_bytes=10**9, memory_failcnt=0,
                         oom_kills=0)
             for ve in envs if ve.node_id in wanted), batch_size=5000)


def python_p95(days):
    """Each VE's p95 RAM from bare values streamed to Python, as period.py does."""
    from collections import defaultdict

    from django.utils import timezone

    from hosting.usage import sampling
    from hosting.usage.models import UsageRollup
    values = defaultdict(list)
    for env_id, ram in UsageRollup.objects.filter(
            resolution=3600, time__gte=timezone.now() - timedelta(days=days)).values_list(
            "environment_id", "ram_avg").iterator(chunk_size=10000):
        values[env_id].append(ram or 0.0)
    return {pk: sampling.p95(ram) for pk, ram in values.items()}


def window_p95(days):
    """Each VE's p95 RAM by a window function: the database sorts each VE's rows."""
    from django.db.models import Count, F, IntegerField, Value, Window
    from django.db.models.functions import Coalesce, Greatest, RowNumber
    from django.utils import timezone

    from hosting.usage.models import UsageRollup
    value = Coalesce("ram_avg", Value(0.0))
    by_ve = {"partition_by": [F("environment_id")]}
    ranked = UsageRollup.objects.filter(
        resolution=3600, time__gte=timezone.now() - timedelta(days=days)).annotate(
        value=value, position=Window(RowNumber(), order_by=[value.asc()], **by_ve),
        count=Window(Count("id"), **by_ve))
    wanted = Greatest(Value(1), (F("count") * 95 + 99) / 100, output_field=IntegerField())
    return dict(ranked.filter(position=wanted).values_list("environment_id", "value"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--ves", type=int, default=500, help="per node")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true",
                        help="in a throw-away PostgreSQL cluster (as tests/on_postgres.py)")
    parser.add_argument("--compare-p95", action="store_true",
                        help="also time each VE's p95 two ways (Python, a window function)")
    args = parser.parse_args()
    return on_a_fresh_database(bench, args)


def on_a_fresh_database(bench, args):
    """``bench(args)`` against a database of its own: SQLite in a temporary data
    directory, or with ``args.postgres`` a throw-away PostgreSQL cluster."""
    with tempfile.TemporaryDirectory(prefix="hosting-bench-") as data:
        os.environ["HOSTING_DATA_DIR"] = data
        os.makedirs(os.path.join(data, "db"))
        if not args.postgres:
            return bench(args)
        from on_postgres import throwaway_cluster
        with throwaway_cluster() as env:
            import psycopg
            os.environ["PGHOST"] = env["PGHOST"]
            with psycopg.connect(dbname="postgres", user="postgres", autocommit=True) as db:
                db.execute("CREATE DATABASE hosting_bench")
            os.environ["DATABASE_URL"] = "postgres://postgres@/hosting_bench"
            return bench(args)


def bench(args):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hosting.settings")
    import django
    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    nodes, plans, envs = build(args.nodes, args.ves, args.days)
    # Statistics as production has them: hourly housekeeping runs ANALYZE on SQLite,
    # PostgreSQL's autovacuum analyses a table after this many new rows.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    else:
        from hosting.usage import collection
        collection.analyze()
    print(f"built {args.nodes} nodes x {args.ves} VEs x {args.days} days in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    run(nodes, plans, envs, args)


def run(nodes, plans, envs, args):
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client

    from common import RESULTS_DIR, write_json
    from hosting.nodes import placement
    from hosting.usage import graphs, tasks
    from staffing import make_staff, verified_login  # tests/staffing.py
    client = verified_login(Client(), make_staff("staff"))
    out = {"nodes": args.nodes, "ves_per_node": args.ves, "days": args.days,
           "rounds": args.rounds, "rollups": len(envs) * (args.days * 24 + 288)}
    if args.compare_p95:
        # Side by side, one figure (each VE's p95 RAM over the month) two ways: bare
        # values streamed to Python (period.py), and a window function in the database.
        timed("p95 per VE, values to Python", lambda: python_p95(args.days), args.rounds, out)
        timed("p95 per VE, window function", lambda: window_p95(args.days), args.rounds, out)

    def page(query):
        response = client.get(f"/staff/reports/overcommit/?{query}")
        assert response.status_code == 200, response.status_code
    # With nothing stored yet: the page computes what it needs (the first view ever).
    once("overcommit page, 30 d, nothing stored", lambda: page("days=30"), out)
    forget_stored()
    timed("hourly: capacity + stored figures", after_rollups(tasks), args.rounds, out)
    timed("choose_node (an order)", lambda: placement.choose_node(plans[2]), args.rounds, out)
    timed("overcommit page, 30 d", lambda: page("days=30"), args.rounds, out)
    timed("overcommit page, 7 d", lambda: page("days=7"), args.rounds, out)
    timed("overcommit page, 1 d", lambda: page("days=1"), args.rounds, out)
    timed("what-if: 100 x P1024", lambda: page(f"days=1&whatif=add&plan={plans[2].pk}&count=100"),
          args.rounds, out)
    timed(f"what-if: drain {nodes[0].name}",
          lambda: page(f"days=1&whatif=drain&node={nodes[0].pk}"), args.rounds, out)

    def metrics():
        response = client.get("/metrics")
        assert response.status_code == 200, response.status_code
    add_samples(nodes[:1], envs)
    timed(f"/metrics, 1 node x {args.ves} VEs", metrics, args.rounds, out)
    add_samples(nodes, envs)
    timed(f"/metrics, {args.nodes} nodes x {args.ves} VEs", metrics, args.rounds, out)
    for span in ("24h", "7d", "30d"):
        timed(f"node graph {span}", lambda: graphs.node_usage(nodes[0], span), args.rounds, out)
    for span in ("24h", "7d", "30d"):
        timed(f"VPS graph {span}", lambda: graphs.usage(envs[len(envs) // 2], span),
              args.rounds, out)
    cache.clear()
    out["database"] = connection.vendor
    write_json(RESULTS_DIR / f"reports-{connection.vendor}.json", out)


def once(label, call, out):
    """One cold call (empty cache), for what is too slow to repeat."""
    from django.core.cache import cache
    cache.clear()
    start = time.perf_counter()
    call()
    cold = time.perf_counter() - start
    out[label] = {"cold_s": cold}
    print(f"{label:<40} cold {cold * 1000:8.1f} ms", flush=True)


def forget_stored():
    """Drop the period figures stored in the database, if this version stores any."""
    try:
        from hosting.usage.models import PeriodFigure
    except ImportError:
        return
    PeriodFigure.objects.all().delete()


def after_rollups(tasks):
    """What hourly housekeeping computes once new hourly rollups are in: cold, nothing
    is stored for them yet; warm, everything is current (the later runs of the hour)."""
    if hasattr(tasks, "after_rollups"):
        return tasks.after_rollups
    from hosting.usage import capacity  # before the figures were stored: placement's only
    return capacity.refresh


if __name__ == "__main__":
    sys.exit(main())

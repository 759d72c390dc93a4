#!/usr/bin/env python3
"""What the usage reports and placement cost on a full node: N VEs (default 500)
with a month of hourly rollups and a day of 5-minute ones, in a throw-away
SQLite database.

Times, cold (empty cache) and warm (median of --rounds): the hourly re-measurement placement reads
(capacity.refresh), one placement decision (choose_node), the overcommit page
(every table), the node graph for 24 h / 7 d / 30 d, and a VPS graph for 30 d.
Writes bench/results/reports-<database>.json.

    .venv/bin/python bench/reports.py [--ves 500] [--days 30] [--rounds 3]
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
    print(f"{label:<28} cold {cold * 1000:8.1f} ms   "
          f"warm {statistics.median(seconds) * 1000:8.1f} ms",
          flush=True)


def build(ves, days):
    """A node of ``ves`` VEs on 5 plans, each with ``days`` of hourly rollups."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from hosting.customers.models import Customer
    from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
    from hosting.nodes.models import Node
    from hosting.plans.models import Plan
    from hosting.usage.models import UsageRollup
    node = Node.objects.create(name="bench", state="online", ram_bytes=512 << 30, cpus=64,
                               disk_bytes=20 << 40, ram_overcommit=Decimal("3"),
                               cpu_overcommit=Decimal("20"))
    owner = Customer.objects.create(user=User.objects.create_user("bench"))
    template = OSTemplate.objects.create(name="busybox", title="BusyBox")
    plans = [Plan.objects.create(name=f"P{mb}", ram_mb=mb, cpus=1, disk_gib=10,
                                 monthly_price=Decimal("1")) for mb in (256, 512, 1024, 2048, 4096)]
    envs = VE.objects.bulk_create(
        VE(veid=1000 + i, owner=owner, plan=plans[i % 5], node=node, template=template,
           hostname=f"b{i}.example.com", actual_state="running") for i in range(ves))
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    for resolution, count in ((3600, days * 24), (300, 288)):
        batch = []
        for ve in envs:
            for step in range(count):
                share = 0.25 + 0.5 * ((step + ve.veid) % 24 == 0)
                batch.append(UsageRollup(
                    environment=ve, resolution=resolution, samples=10,
                    time=now - timedelta(seconds=resolution * (step + 1)),
                    ram_avg=ve.plan.ram_mb * (1 << 20) * share, ram_max=0, cpu_avg=0.05,
                    cpu_max=0.2, disk_max=2 << 30, rx_avg=10, tx_avg=10))
            if len(batch) > 50000:
                UsageRollup.objects.bulk_create(batch)
                batch = []
        UsageRollup.objects.bulk_create(batch)
    return node, plans, envs


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
    parser.add_argument("--ves", type=int, default=500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hosting-bench-") as data:
        os.environ["HOSTING_DATA_DIR"] = data
        os.makedirs(os.path.join(data, "db"))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hosting.settings")
        import django
        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        settings.ALLOWED_HOSTS = ["*"]
        call_command("migrate", verbosity=0)
        start = time.perf_counter()
        node, plans, envs = build(args.ves, args.days)
        from hosting.usage import collection
        collection.analyze()  # as hourly housekeeping does
        print(f"built {args.ves} VEs x {args.days} days in {time.perf_counter() - start:.0f} s",
              flush=True)
        run(node, plans, envs, args)


def run(node, plans, envs, args):
    from django.contrib.auth.models import User
    from django.test import Client

    from common import RESULTS_DIR, write_json
    from hosting.nodes import placement
    from hosting.usage import capacity, graphs
    staff = User.objects.create_user("staff", is_staff=True)
    client = Client()
    client.force_login(staff)
    out = {"ves": args.ves, "days": args.days, "rounds": args.rounds}
    # Side by side, one figure (each VE's p95 RAM over the month) two ways: bare
    # values streamed to Python (period.py), and a window function in the database.
    timed("p95 per VE, values to Python", lambda: python_p95(args.days), args.rounds, out)
    timed("p95 per VE, window function", lambda: window_p95(args.days), args.rounds, out)
    timed("capacity.refresh (hourly)", capacity.refresh, args.rounds, out)
    timed("choose_node (an order)", lambda: placement.choose_node(plans[2]), args.rounds, out)

    def page(query):
        response = client.get(f"/staff/reports/overcommit/?{query}")
        assert response.status_code == 200, response.status_code
    timed("overcommit page, 30 d", lambda: page("days=30"), args.rounds, out)
    timed("overcommit page, 1 d", lambda: page("days=1"), args.rounds, out)
    timed("what-if: 100 x P1024", lambda: page(f"days=1&whatif=add&plan={plans[2].pk}&count=100"),
          args.rounds, out)
    for span in ("24h", "7d", "30d"):
        timed(f"node graph {span}", lambda: graphs.node_usage(node, span), args.rounds, out)
    timed("VPS graph 30d", lambda: graphs.usage(envs[0], "30d"), args.rounds, out)
    from django.db import connection
    out["database"] = connection.vendor
    write_json(RESULTS_DIR / f"reports-{connection.vendor}.json", out)


if __name__ == "__main__":
    main()

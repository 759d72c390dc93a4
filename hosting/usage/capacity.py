"""What the placement rule knows of real usage: each node's measured load and each
plan's observed share of what it sells.

Measured from the hourly rollups of the last PLACEMENT_DAYS (period.py). A VE counts as
measured once it has MIN_HOURS of them in the window; a node's load is the p95
of the hourly sums of its measured live VEs (RAM bytes, CPUs busy); a plan's
share is the median over its measured VEs of each one's p95 as a share of the
plan's limit. ``refresh`` stores a measurement after the hourly rollups (a
beat task), so an order reads a few rows instead of a month of samples;
reports measure their own period with ``measure``. The Profile and the stored
copy's reader are in load.py (placement reads them there without importing this
module, which uses placement's ``demand``); they stay importable from here.
"""

from collections import defaultdict
from datetime import timedelta

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from hosting.nodes import placement

from . import sampling
from .load import EMPTY, PLACEMENT_DAYS, NodeUse, PlanUse, Profile, stored  # noqa: F401
from .models import NodeLoad, PlanLoad
from .period import MIN_HOURS, Period  # noqa: F401 (MIN_HOURS: part of the contract)

REFRESH = timedelta(hours=1)  # hourly rollups are what it reads
REFRESHED_KEY = "usage-capacity-refreshed"


def measure(days=PLACEMENT_DAYS, now=None, period=None):
    """The Profile of the live VEs over the last ``days`` (or over ``period``)."""
    from hosting.nodes.models import Node
    period = period or Period(days, now)
    cpus_of = dict(Node.objects.values_list("pk", "cpus"))
    ves = {ve.pk: ve for ves in placement.live_ves(cpus_of).values() for ve in ves}
    measured = {pk for pk in period.measured if pk in ves}
    ram_shares, cpu_shares, by_node = defaultdict(list), defaultdict(list), defaultdict(set)
    sold_cpus = {}  # per (plan, node CPUs): placement.demand is the same for each VE
    for pk in measured:
        ve = ves[pk]
        by_node[ve.node_id].add(pk)
        ram_shares[ve.plan.pk].append(period.ram_p95[pk] / (ve.plan.ram_mb << 20))
        key = (ve.plan.pk, cpus_of[ve.node_id])
        if key not in sold_cpus:
            sold_cpus[key] = float(placement.demand(ve.plan, key[1]).cpu) or 1.0
        cpu_shares[ve.plan.pk].append(period.cpu_p95[pk] / sold_cpus[key])
    totals = period.measured_totals
    # A node without sums has measured VEs only since the figures a page's stand-in
    # period holds (one moved there meanwhile): its VEs count as not measured yet.
    nodes = {node_id: NodeUse(sampling.p95([t[0] for t in totals[node_id]]),
                              sampling.p95([t[1] for t in totals[node_id]]),
                              frozenset(pks))
             for node_id, pks in by_node.items() if totals.get(node_id)}
    plans = {plan_id: PlanUse(sampling.median(shares), sampling.median(cpu_shares[plan_id]),
                               len(shares))
             for plan_id, shares in ram_shares.items()}
    return Profile(nodes, plans, period.now, period.days)


def refresh(now=None):
    """Measure the last PLACEMENT_DAYS and store it for placement; return the Profile."""
    from hosting.nodes.models import Node
    from hosting.plans.models import Plan
    profile = measure(PLACEMENT_DAYS, now)
    # Noted in the cache, so an idle fleet (nothing measured, no rows stored) is
    # not re-measured on every housekeeping run either.
    cache.set(REFRESHED_KEY, profile.computed_at.timestamp(), None)
    nodes, plans = set(Node.objects.values_list("pk", flat=True)), \
        set(Plan.objects.values_list("pk", flat=True))  # none deleted meanwhile
    with transaction.atomic():
        NodeLoad.objects.all().delete()
        PlanLoad.objects.all().delete()
        NodeLoad.objects.bulk_create(
            NodeLoad(node_id=pk, computed_at=profile.computed_at, days=profile.days,
                     ram_p95=use.ram_p95, cpu_p95=use.cpu_p95, measured=sorted(use.measured))
            for pk, use in profile.nodes.items() if pk in nodes)
        PlanLoad.objects.bulk_create(
            PlanLoad(plan_id=pk, computed_at=profile.computed_at, days=profile.days,
                     ram_share=use.ram_share, cpu_share=use.cpu_share, measured=use.measured)
            for pk, use in profile.plans.items() if pk in plans)
    return profile


def due(now=None):
    """True when the last ``refresh`` is older than REFRESH (or unknown)."""
    last = cache.get(REFRESHED_KEY)
    return last is None or last <= ((now or timezone.now()) - REFRESH).timestamp()

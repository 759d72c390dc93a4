"""Usage collection: traffic and samples on the node (its pool has the engine), rollups
and pruning in housekeeping."""

import logging

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from hosting.controlplane import not_this_node
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor
from ve.errors import VEError

from . import capacity, collection, figures, graphs, reports, traffic
from .period import REPORT_DAYS, Period

log = logging.getLogger(__name__)


@shared_task(name="hosting.usage.tasks.collect_traffic")
def collect_traffic(node_name):
    """Read every VE's traffic counters into this month's rows and apply the quotas."""
    if not_this_node(node_name):
        return None
    return collect(node_name)


def collect(node_name, eng=None):
    eng = eng or executor.engine()
    counted = 0
    ves = VE.objects.filter(node__name=node_name).live() \
        .exclude(actual_state=VE.State.CREATING).select_related("plan")
    for ve in list(ves):  # no open read cursor while writing (SQLite)
        try:
            totals = eng.traffic(ve.veid)
            traffic.record(ve, totals)
            traffic.enforce(ve)
        except VEError:
            continue  # not (yet) on the node: reconcile reports it
        except Exception:  # one VE's trouble (a busy database) must not stop the rest
            log.exception("traffic of VE %s not recorded", ve.veid)
            continue
        counted += 1
    return counted


@shared_task(name="hosting.usage.tasks.sample_node")
def sample_node(node_name):
    """Sample every VE of this node once and store it (NODE_SAMPLE_SECONDS apart)."""
    if not_this_node(node_name):
        return None
    return collection.store(node_name, executor.engine().sample())


@shared_task(name="hosting.usage.tasks.roll_up_usage")
def roll_up_usage():
    """Roll complete periods up, prune what is past its retention, and store the period
    figures reports and placement read (``after_rollups``)."""
    made = collection.roll_up()
    pruned = collection.prune()
    after_rollups()
    return {"rollups": made, "pruned": pruned}


@shared_task(name="hosting.usage.tasks.store_figures")
def store_figures():
    """Store the period figures that are not current (a report was read meanwhile: a VE
    was moved or destroyed since the last rollup run; figures.ask_for)."""
    return _store_periods(timezone.now())


def after_rollups(now=None):
    """Store each node's graph series that are not current (graphs.store_node_usage) and
    the figures of every period the reports offer that are not current (new
    hourly rollups, VEs moved or destroyed: period.py), then, if any was or an hour has
    passed, re-measure what placement reads from them; return how many periods had
    figures to compute.

    So the first report view after new rollups reads stored figures (a few rows)
    instead of a month of rollups, and placement's measurement is of the same data.
    """
    now = now or timezone.now()
    figures.prune(now)
    graphs.store_node_usage(now)  # first: the 5-minute ranges are current a run at most
    due = capacity.due(now)
    if due:
        collection.analyze()  # before the big reads, as statistics guide them (SQLite)
    computed = _store_periods(now)
    if computed or due:
        capacity.refresh(now)  # reads the 30-day figures just stored
    # When the hour turns, each period drops its oldest hour: a page viewed before the
    # next run (and before that hour's rollups arrive) would compute its figures
    # itself, so the last run of the hour stores them for the next one too.
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if next_hour - now <= _run_interval():
        computed += _store_periods(next_hour + timedelta(seconds=1))
    return computed


def _store_periods(now):
    periods = [Period(days, now) for days in REPORT_DAYS]
    return sum(period.store_current() for period in periods) + \
        sum(reports.store_episodes(period) for period in periods) + \
        reports.store_rightsizing(now)


def _run_interval():
    """How often housekeeping runs ``roll_up_usage`` (settings.CELERY_BEAT_SCHEDULE)."""
    entry = settings.CELERY_BEAT_SCHEDULE.get("roll-up-usage", {})
    return timedelta(seconds=float(entry.get("schedule", 300)))

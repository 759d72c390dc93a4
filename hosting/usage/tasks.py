"""Usage collection: traffic and samples on the node (its pool has the engine), rollups
and pruning in housekeeping."""

import logging

from celery import shared_task

from hosting.controlplane import not_this_node
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor
from ve.errors import VEError

from . import capacity, collection, traffic

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
    """Roll complete periods up, prune what is past its retention, and re-measure
    what placement reads once an hour."""
    made = collection.roll_up()
    pruned = collection.prune()
    if capacity.due():
        collection.analyze()
        capacity.refresh()
    return {"rollups": made, "pruned": pruned}

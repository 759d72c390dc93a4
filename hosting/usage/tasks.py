"""Node-side usage collection (runs in the node worker's pool: it needs the engine)."""

import logging

from celery import shared_task

from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor
from ve.errors import VEError

from . import traffic

log = logging.getLogger(__name__)


@shared_task(name="hosting.usage.tasks.collect_traffic")
def collect_traffic(node_name):
    """Read every VE's traffic counters into this month's rows and apply the quotas."""
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

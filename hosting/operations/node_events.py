"""What VEs did by themselves on a node, brought into the database.

The node's watcher records every VE that ended without being asked
(``Engine.events``: a reboot or power-off from inside, a crash, the node's
own reboot). The node worker reads them as they come (``consume``) and, for
each, writes a finished Operation to the VPS's history (so the customer sees
"powered off from inside") and the states that follow:

- reboot: it runs again (the watcher restarted it);
- power-off: it is stopped and stays so: the desired state follows, so
  reconcile reports no drift and does not start it again;
- anything else: it is stopped against its desired state, and reconcile
  brings it back (with back-off, ``restarts.py``).

Each event is recorded once (its id is the Operation's idempotency key)
and only then forgotten on the node, so a crash in between repeats nothing.
"""

import logging
from datetime import datetime, timezone

from django.db import IntegrityError, transaction

from hosting.core import audit
from hosting.environments.models import VirtualEnvironment as VE

from . import live
from .models import Operation

log = logging.getLogger(__name__)

Kind, State = Operation.Kind, VE.State
_RECORDS = {  # reason -> (kind, origin, message)
    "reboot": (Kind.RESTART, "inside", "rebooted from inside"),
    "poweroff": (Kind.POWEROFF, "inside", "powered off from inside"),
    "crash": (Kind.CRASH, "node", "stopped unexpectedly (its init ended)"),
    "oom": (Kind.CRASH, "node", "its memory filled and the OOM killer ended its init; "
                                "the node started it again"),
    "unknown": (Kind.CRASH, "node", "stopped while the node's watcher was away; "
                                    "the reason is unknown"),
    "node-reboot": (Kind.CRASH, "node", "stopped by the node's reboot"),
}


def consume(node_name, eng):
    """Record every new event of node ``node_name``; return how many asked for a restart."""
    unexpected = 0
    for event in eng.events():
        try:
            unexpected += record(node_name, event)
        except Exception:  # a busy database: the event stays for the next round
            log.exception("event %s of node %s not recorded", event.get("id"), node_name)
            continue
        eng.forget_event(event["id"])
    return unexpected


def record(node_name, event):
    """Write ``event`` of node ``node_name`` to its VE's history; True if the VE
    stopped against its desired state (reconcile should look at it now)."""
    ve = VE.objects.filter(node__name=node_name, veid=event["veid"]).live() \
        .exclude(actual_state=State.CREATING).first()
    key = f"node-event:{node_name}:{event['id']}"[:100]
    if ve is None or Operation.objects.filter(idempotency_key=key).exists():
        return False
    try:
        return _write(ve, node_name, event, key)
    except IntegrityError:  # another consumer (reconcile, the events thread) was first
        return False


def _write(ve, node_name, event, key):
    kind, origin, message = _RECORDS.get(event["reason"], _RECORDS["unknown"])
    moment = datetime.fromtimestamp(event["time"], timezone.utc)
    restarts = event["reason"] in ("reboot", "oom")  # the node starts these again at once
    failed = restarts and not event["restarted"]
    if failed:
        message = f"{message}, but did not start again: {event['error']}"
    with transaction.atomic():
        Operation.objects.create(
            environment=ve, kind=kind, idempotency_key=key, progress=100,
            state=Operation.State.FAILED if failed else Operation.State.SUCCEEDED,
            params={"origin": origin, "reason": event["reason"]}, message=message[:200],
            error=event["error"] if failed else "", error_code="start_failed" if failed else "",
            started=moment, finished=moment)
        ve = VE.objects.select_for_update().get(pk=ve.pk)
        running = restarts and not failed
        ve.actual_state = State.RUNNING if running else \
            State.SUSPENDED if ve.desired_state == State.SUSPENDED else State.STOPPED
        busy = ve.operations.filter(state__in=Operation.UNFINISHED).exists()
        if event["reason"] == "poweroff" and not busy and ve.desired_state == State.RUNNING:
            ve.desired_state = State.STOPPED  # the customer turned it off: it stays off
        ve.save(update_fields=["actual_state", "desired_state"])
        audit.record(None, f"ve.{event['reason']}", ve, node=node_name, message=message)
    live.changed(ve.veid)
    return not running and ve.desired_state == State.RUNNING

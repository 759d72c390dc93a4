"""Queueing many moves a few at a time: what evacuations and rebalances share.

``advance`` is called again and again (housekeeping's beat) with the moves a
batch still wants; each call queues "migrate" operations until ``parallel`` of
the batch's run at once. A move whose operation failed since the batch started,
or that cannot be asked (no node can take the VPS), is *stuck*: named with its
reason and not tried again by this batch.
"""

from hosting.core.errors import Conflict, ServiceError
from hosting.operations.models import Operation

from . import moves


def advance(wanted, since, parallel, user, stuck):
    """Queue the next of ``wanted`` [(VE, target node name or None: the best)].

    ``since``: when the batch started (its operations are those created since).
    Return the new ``stuck`` ({str(veid): why}).
    """
    stuck = dict(stuck)
    moving = set(Operation.objects.filter(
        kind=Operation.Kind.MIGRATE, state__in=Operation.UNFINISHED, created__gte=since,
        environment__in=[ve for ve, _ in wanted]).values_list("environment_id", flat=True))
    room = parallel - len(moving)
    for ve, target in wanted:
        if room <= 0:
            break
        if ve.pk in moving or str(ve.veid) in stuck:
            continue
        failed = ve.operations.filter(kind=Operation.Kind.MIGRATE,
                                      state=Operation.State.FAILED, created__gte=since).first()
        if failed:
            stuck[str(ve.veid)] = f"its move failed: {failed.error}"
            continue
        try:
            moves.request(ve, user, target)
            room -= 1
        except Conflict as exc:
            if "busy" not in exc.message:  # another operation runs: next round
                stuck[str(ve.veid)] = exc.message
        except ServiceError as exc:  # the requester lost the right, say
            stuck[str(ve.veid)] = exc.message
    return stuck


def progress(ves, since, stuck):
    """[{veid, hostname, state, progress, message}] of ``ves``' moves since ``since``:
    the latest move's state, else "stuck" (with why) or "waiting"."""
    latest = {}
    for op in Operation.objects.filter(kind=Operation.Kind.MIGRATE, created__gte=since,
                                       environment__in=ves).order_by("created"):
        latest[op.environment_id] = op
    rows = []
    for ve in ves:
        op, why = latest.get(ve.pk), stuck.get(str(ve.veid))
        if op is not None:
            rows.append({"veid": ve.veid, "hostname": ve.hostname, "state": op.state,
                         "progress": op.progress,
                         "message": op.error or op.message or f"to {op.params.get('to')}"})
        else:
            rows.append({"veid": ve.veid, "hostname": ve.hostname,
                         "state": "stuck" if why else "waiting", "progress": 0,
                         "message": why or ""})
    return sorted(rows, key=lambda row: row["veid"])

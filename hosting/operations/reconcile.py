"""Reconcile one node: finish what was interrupted, then compare and report drift.

Runs on the node's own worker (it needs the engine). The database holds the
desired state and the inventory; the engine's files and cgroups hold what is
really there.
"""

import logging

from django.db import IntegrityError
from django.utils import timezone

from hosting.core.errors import Conflict
from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node
from ve.errors import NotFound, VEError
from ve.kernel import proc

from . import dispatch, executor, live, locks, node_events, restarts, services
from .models import Operation
from .runners import DISK_KEYS, IO_KEYS, config_of

log = logging.getLogger(__name__)


def node(name, eng=None, hand_over=False):
    """Reconcile node ``name``; return a summary dict (also stored on the node).

    The first reconcile after the node booted starts its VEs that should run
    in ``restarts.boot_order``; later ones restart such VEs with back-off.
    Interrupted operations are run again here, or with ``hand_over`` (the
    chores worker) sent to the node's operations queue, whose pool is theirs.
    """
    eng = eng or executor.engine()
    node_events.consume(name, eng)  # first: a power-off from inside is not drift
    resumed = _resume_interrupted(name, eng, hand_over)
    boot_id = proc.boot_id()
    booting = not Node.objects.filter(name=name, boot_id=boot_id).exists()
    drift, queued, unmanaged = _compare(name, eng, booting)
    _refresh_snapshots(name, eng)
    Node.objects.filter(name=name).update(drift=drift, unmanaged_veids=unmanaged,
                                          boot_id=boot_id)
    return {"resumed": resumed, "drift": drift, "queued": queued, "unmanaged": unmanaged,
            "booting": booting}


def _refresh_snapshots(name, eng):
    """The space each snapshot holds grows as its VPS writes: its rows get the node's
    figures again (the limits and pages read them)."""
    from hosting.environments import snapshots
    ves = VE.objects.filter(node__name=name).exclude(actual_state=VE.State.DESTROYED)
    with_rows = set(ves.filter(snapshots__isnull=False).values_list("pk", flat=True))
    for ve in list(ves):
        if not (ve.pk in with_rows or eng.layout.snapshots(ve.veid).is_dir()):
            continue
        try:
            snapshots.record(ve, eng.snapshots(ve.veid))
        except VEError as exc:  # gone from the node meanwhile: drift says so
            log.info("VE %s: snapshots not read (%s)", ve.veid, exc)


def _resume_interrupted(name, eng, hand_over=False):
    resumed = []
    # list(): on SQLite an open read cursor would turn each write below into
    # a read-to-write upgrade, which fails at once when another process wrote.
    running = list(Operation.objects.filter(state=Operation.State.RUNNING,
                                            environment__node__name=name)
                   .select_related("environment"))
    for op in running:
        with locks.ve_lock(op.environment.veid, wait=False) as free:
            interrupted = free
        if interrupted:  # nobody holds its lock: its worker died mid-way
            log.warning("operation %s (%s VE %s) was interrupted; running it again",
                        op.pk, op.kind, op.environment.veid)
            if hand_over:
                dispatch.send(op.pk, Node(name=name).queue)
            else:
                executor.execute(op.pk, eng)
            resumed.append(str(op.pk))
    return resumed


def _compare(name, eng, booting=False):
    """Compare each VE under its worker lock; queue what brings it back to its desired state."""
    drift, queued, stopped = [], [], []
    try:
        on_node = set(eng.layout.veids())
    except OSError as exc:
        return [f"cannot list VEs: {exc}"], queued, []
    live = VE.objects.filter(node__name=name).exclude(actual_state=VE.State.DESTROYED)
    known = set(live.values_list("veid", flat=True)) | _arriving(name)
    for ve in list(live.select_related("plan")):
        with locks.ve_lock(ve.veid, wait=False) as free:
            if not free:
                continue  # an operation is running on it right now
            fix = _compare_one(ve, eng, drift)
        if fix == Operation.Kind.START:
            stopped.append(VE.objects.get(pk=ve.pk))
        elif fix and _queue(ve, fix):
            queued.append([ve.veid, fix])
    for ve in _to_start(stopped, booting, drift):
        if _queue(ve, Operation.Kind.START):
            queued.append([ve.veid, Operation.Kind.START])
    unmanaged = sorted(on_node - known)
    for veid in unmanaged:
        drift.append(f"VE {veid} is on the node but not in the dashboard")
    return drift, queued, unmanaged


def _arriving(name):
    """VEIDs being moved to node ``name``: on it before the database says so."""
    return set(Operation.objects.filter(
        kind=Operation.Kind.MIGRATE, state__in=Operation.UNFINISHED, params__to=name)
        .values_list("environment__veid", flat=True))


def _compare_one(ve, eng, drift):
    """Record the VE's real state; return the operation kind that would fix it, if any."""
    ve = VE.objects.filter(pk=ve.pk).select_related("plan").first()  # fresh, under the lock
    if ve is None or ve.actual_state == VE.State.DESTROYED:
        return None
    if ve.operations.filter(state__in=Operation.UNFINISHED).exists():
        return None
    if ve.desired_state == VE.State.DESTROYED:
        return Operation.Kind.DESTROY  # e.g. a failed create whose rollback failed
    try:
        running = eng.status(ve.veid).state == "running"
    except NotFound:
        if ve.actual_state != VE.State.CREATING:
            drift.append(f"VE {ve.veid} ({ve.hostname}) is missing on the node")
            _update(ve, VE.State.UNKNOWN)
        return None
    if not running and eng.settling(ve.veid):
        return None  # rebooting by itself, or being stopped: look again next time
    seen = VE.State.RUNNING if running else VE.State.STOPPED
    fix = None
    if ve.desired_state == VE.State.HIBERNATED:
        if running:
            drift.append(f"VE {ve.veid} ({ve.hostname}) is hibernated but running")
        elif eng.hibernated(ve.veid):
            seen = VE.State.HIBERNATED
    elif ve.desired_state == VE.State.SUSPENDED:
        if running:
            drift.append(f"VE {ve.veid} ({ve.hostname}) is suspended but running")
            fix = Operation.Kind.SUSPEND
        else:
            seen = VE.State.SUSPENDED
    elif ve.desired_state == VE.State.RUNNING and not running:
        fix = Operation.Kind.START  # it stopped by itself: _to_start decides when
    elif seen != ve.desired_state:
        drift.append(f"VE {ve.veid} ({ve.hostname}) should be {ve.desired_state} but is {seen}")
    _update(ve, seen)
    if fix == Operation.Kind.START:
        return fix
    if fix is None and _limits_differ(eng, ve):
        fix = Operation.Kind.SET
    return fix


def _to_start(ves, booting, drift):
    """Of VEs that should run but are stopped, those to start now, in order."""
    if booting:
        return restarts.boot_order(ves)  # the node rebooted: no crash, no back-off
    now, chosen = timezone.now(), []
    for ve in ves:
        decision = restarts.decide(ve, now)
        if decision == restarts.START:
            chosen.append(ve)
        elif decision == restarts.WAIT:
            drift.append(f"VE {ve.veid} ({ve.hostname}) stopped unexpectedly; it is started "
                         f"again after a pause (restart {ve.restarts} of {restarts.MAX_RESTARTS})")
        else:
            drift.append(f"VE {ve.veid} ({ve.hostname}) is in a crash loop: it stopped "
                         f"{restarts.MAX_RESTARTS} times within {restarts.WINDOW} of its "
                         "restarts and is left stopped until staff or its owner start it")
    return chosen


def _update(ve, state):
    """Change the actual state unless someone else changed the row meanwhile."""
    if VE.objects.filter(pk=ve.pk, actual_state=ve.actual_state).update(actual_state=state):
        live.changed(ve.veid)


def _limits_differ(eng, ve):
    """True if the node's limits, addresses, name servers or seccomp relaxation are not
    the dashboard's.

    Disk size and I/O limits are left out: what cannot change live (a smaller
    disk) waits for the VE's next start, and what a node cannot do (an I/O
    weight without BFQ) it never will; a SET each cycle would change neither.
    Addresses compare as sets: a live add appends on the node (the VE keeps its
    first address as its source) while the dashboard lists IPv4 first, and a
    SET never reorders them, so an order difference would queue one each cycle.
    """
    try:
        have, want = eng.config(ve.veid), config_of(ve)
        skip = dict.fromkeys(DISK_KEYS + IO_KEYS, 0)
        return (have.limits._replace(**skip), set(have.ips), have.nameservers,
                have.seccomp_allow) != \
            (want.limits._replace(**skip), set(want.ips), want.nameservers, want.seccomp_allow)
    except (NotFound, VEError):
        return False


def _queue(ve, kind):
    """Queue a system operation (no requester) that brings the VE to its desired state."""
    try:
        op = services.create(ve, kind, None, {})
    except (IntegrityError, Conflict):
        return False
    dispatch.on_commit(op)
    return True

"""Requesting operations: validate, authorise, write the row, dispatch after commit.

This is the only path by which the web side changes anything on a node.
"""

from django.db import IntegrityError, transaction

from hosting.consoles import ending as consoles
from hosting.core import audit, roles
from hosting.core.errors import Conflict, Forbidden
from hosting.environments.models import VirtualEnvironment as VE

from . import dispatch, restarts
from .models import Operation

Kind = Operation.Kind
State = VE.State

# Which actual states each action may start from, and the desired state it sets
# (the pages enable a button only where its action may start).
# A hibernated VPS (its memory saved on its node) may start (which resumes it),
# move, be suspended or terminated; what would change it under the saved image
# (reboot, reinstall, a limit change) waits until it runs again.
ACTION_STATES = {
    Kind.START: ({State.STOPPED, State.HIBERNATED, State.UNKNOWN}, State.RUNNING),
    Kind.STOP: ({State.RUNNING, State.UNKNOWN}, State.STOPPED),
    Kind.RESTART: ({State.RUNNING, State.STOPPED, State.UNKNOWN}, State.RUNNING),
    Kind.REINSTALL: ({State.RUNNING, State.STOPPED, State.UNKNOWN}, State.RUNNING),
    Kind.PASSWORD: ({State.RUNNING}, None),
    Kind.SET: ({State.RUNNING, State.STOPPED, State.SUSPENDED, State.UNKNOWN}, None),
    Kind.SUSPEND: ({State.RUNNING, State.STOPPED, State.HIBERNATED, State.UNKNOWN},
                   State.SUSPENDED),
    Kind.RESUME: ({State.SUSPENDED}, State.RUNNING),
    Kind.MIGRATE: ({State.RUNNING, State.STOPPED, State.SUSPENDED, State.HIBERNATED}, None),
    Kind.HIBERNATE: ({State.RUNNING}, State.HIBERNATED),
    # A hibernated VPS is not rolled back: its saved memory belongs to its disk as it is.
    Kind.SNAPSHOT: ({State.RUNNING, State.STOPPED, State.SUSPENDED, State.HIBERNATED}, None),
    Kind.ROLLBACK: ({State.RUNNING, State.STOPPED}, None),
    Kind.SNAPSHOT_DELETE: ({State.RUNNING, State.STOPPED, State.SUSPENDED, State.HIBERNATED,
                           State.UNKNOWN}, None),
    # Backups are taken from a snapshot copy; restoring files needs the VPS running
    # (they are unpacked by its own tar), a whole restore a disk not in use by a
    # saved memory image.
    Kind.BACKUP: ({State.RUNNING, State.STOPPED, State.SUSPENDED, State.HIBERNATED}, None),
    Kind.RESTORE: ({State.RUNNING, State.STOPPED}, None),
    Kind.RESTORE_FILES: ({State.RUNNING}, None),
    Kind.DESTROY: ({State.RUNNING, State.STOPPED, State.HIBERNATED, State.SUSPENDED,
                    State.UNKNOWN, State.CREATING}, State.DESTROYED),
}
STAFF_ONLY = {Kind.SUSPEND, Kind.RESUME, Kind.SET, Kind.MIGRATE}
_REFUSAL = {
    State.RUNNING: "it is already running", State.STOPPED: "it is stopped",
    State.SUSPENDED: "it is suspended", State.CREATING: "it is still being created",
    State.HIBERNATED: "it is hibernated (Start resumes it)",
    State.DESTROYED: "it has been terminated",
}


def mark_passing_states(ves):
    """Set ``ve.passing_state`` ("Rebooting", ...) on each VPS an operation is running on,
    None on the others, so lists do not show "Running" while a reboot runs."""
    ves = list(ves)
    busy = {op.environment_id: op for op in Operation.objects.filter(
        environment__in=ves, state__in=Operation.UNFINISHED)}
    for ve in ves:
        ve.passing_state = busy[ve.pk].passing_state if ve.pk in busy else None
    return ves


def check_actor(user, kind=None):
    """Refuse suspended customers, staff-only kinds for customers, and staff whose
    role lacks the kind's capability (roles.KIND_CAPABILITY)."""
    if user.is_staff:
        if not roles.can(user, roles.KIND_CAPABILITY.get(kind, roles.DEFAULT_KIND_CAPABILITY)):
            raise Forbidden(roles.refusal(user))
        return
    customer = getattr(user, "customer", None)
    if customer is None:
        raise Forbidden("this login has no customer account")
    if not customer.is_active:
        raise Forbidden("your account is suspended; contact support")
    if kind in STAFF_ONLY:
        raise Forbidden("only staff can do this")


def check_plan_allows(ve, kind, user):
    """Refuse a customer's hibernation when the VPS's plan does not include it."""
    if kind == Kind.HIBERNATE and not user.is_staff and not ve.plan.hibernation:
        raise Forbidden(f"plan {ve.plan.name} does not include hibernation")


class Replay(Exception):
    """A concurrent request with the same idempotency key won: answer with its operation."""

    def __init__(self, op):
        super().__init__(str(op.pk))
        self.op = op


def request(ve, kind, user, params=None, idempotency_key=None):
    """Queue operation ``kind`` on ``ve`` for ``user``; return the Operation.

    Raises Conflict when the VE is being changed or cannot take ``kind`` in its
    state; the same ``idempotency_key`` again returns the first operation.
    """
    check_actor(user, kind)
    try:
        return _request(ve, kind, user, params, idempotency_key)
    except Replay as replay:
        return _same_request(replay.op, ve, kind)


def _request(ve, kind, user, params, idempotency_key):
    with transaction.atomic():
        if idempotency_key:
            earlier = Operation.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is not None:
                return _same_request(earlier, ve, kind)
        ve = VE.objects.select_for_update().select_related("node").get(pk=ve.pk)
        allowed, desired = ACTION_STATES[kind]
        if ve.actual_state not in allowed:
            raise Conflict(f"cannot {Kind(kind).label.lower()} VPS {ve.hostname}: "
                           f"{_REFUSAL.get(ve.actual_state, 'its state is ' + ve.actual_state)}")
        if kind != Kind.RESUME and ve.desired_state == State.SUSPENDED and not user.is_staff:
            raise Conflict(f"VPS {ve.hostname} is suspended; contact support")
        check_plan_allows(ve, kind, user)
        op = create(ve, kind, user, params or {}, idempotency_key)
        if desired:
            ve.desired_state = desired
            ve.save(update_fields=["desired_state"])
        if desired == State.RUNNING:
            restarts.forgive(ve)  # started on purpose: a crash loop is over
        audit.record(user, f"ve.{kind}", ve, operation=str(op.pk))
        dispatch.on_commit(op)
    return op


# Asking for these closes the VPS's open web consoles at once (hosting/consoles/ending.py):
# (reason, what the console's user is told).
# What stops the VPS would end its console on the node a moment later anyway.
CLOSES_CONSOLES = {Kind.SUSPEND: ("suspended", "the VPS is being suspended"),
                   Kind.DESTROY: ("terminated", "the VPS is being terminated"),
                   Kind.STOP: ("ended", "the VPS is being stopped"),
                   Kind.HIBERNATE: ("ended", "the VPS is being hibernated"),
                   Kind.REINSTALL: ("ended", "the VPS is being reinstalled")}


def create(ve, kind, user, params, idempotency_key=None):
    """Write a queued Operation; Conflict if the VE already has an unfinished one."""
    busy = ve.operations.filter(state__in=Operation.UNFINISHED).first()
    if busy is not None:
        raise _busy(ve, busy)
    try:
        with transaction.atomic():
            op = Operation.objects.create(environment=ve, kind=kind, requested_by=user,
                                          params=params, idempotency_key=idempotency_key)
        if kind in CLOSES_CONSOLES:
            consoles.after_commit(consoles.end_ve, ve.veid, *CLOSES_CONSOLES[kind])
        return op
    except IntegrityError:  # a concurrent request won the race
        if idempotency_key:
            earlier = Operation.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is not None:
                raise Replay(earlier) from None
        raise _busy(ve, ve.operations.filter(state__in=Operation.UNFINISHED).first()) from None


def _busy(ve, op):
    what = f"{op.get_kind_display().lower()} ({op.state})" if op else "another operation"
    return Conflict(f"VPS {ve.hostname} is busy: {what} must finish first")


def _same_request(earlier, ve, kind):
    if earlier.environment_id != ve.pk or earlier.kind != kind:
        raise Conflict("this idempotency key was already used for a different request")
    return earlier

"""Running one operation on its node: lock, run, record. Safe to call twice.

``execute`` is what the Celery task and the reconcile call. Under the VE's
worker lock it re-reads the row: a finished operation is left alone (double
delivery); a queued one runs; a "running" one whose lock we could take was
interrupted (its worker died) and runs again, since runners converge.
"""

import logging
import time
from collections import namedtuple

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from hosting.core import dbsecure
from hosting.environments.models import VirtualEnvironment as VE
from ve import Engine
from ve.engine.migration import MigrationFailed
from ve.errors import (AlreadyExists, InvalidConfig, NeedsStop, NotFound, ResourceError,
                       StateError, Unsupported, VEError)

from . import dispatch, live, locks, moving, runners
from .models import Operation

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
SECRET_PARAMS = ("password_hash",)
# Engine error types -> Operation.error_code, most specific first (see Operation.ERROR_CODES).
_CODES = ((MigrationFailed, "migration_failed"), (runners.ForeignVE, "foreign_ve"),
          (runners.DiskTooSmall, "disk_too_small"),
          (NeedsStop, "needs_stop"), (InvalidConfig, "invalid"), (NotFound, "not_found"),
          (AlreadyExists, "exists"), (StateError, "wrong_state"), (ResourceError, "resource"),
          (Unsupported, "unsupported"), (VEError, "engine_error"))


def error_code(exc):
    """The stable ``Operation.error_code`` for an exception a runner raised."""
    return next((code for kind, code in _CODES if isinstance(exc, kind)), "internal_error")


class Context(namedtuple("Context", "engine op ve notes")):
    """What a runner gets: the engine, the operation and its VE (and its notes)."""

    __slots__ = ()

    @classmethod
    def of(cls, eng, op):
        return cls(eng, op, op.environment, [])

    def note(self, message):
        """Something the requester should know although the operation succeeds
        (e.g. a disk change that waits for a reboot): kept in its final message."""
        self.notes.append(message)
        self.progress(90, message)

    def progress(self, percent, message):
        """Report progress; a busy database only costs the report, never the operation."""
        try:
            Operation.objects.filter(pk=self.op.pk).update(progress=percent,
                                                           message=message[:200])
        except OperationalError:
            log.warning("progress of operation %s not recorded (database busy)", self.op.pk)
            return
        live.changed(self.ve.veid)


def engine():
    """The node's engine (VE_ROOT and VE_CGROUP_PARENT come from the environment)."""
    return Engine()


def execute(op_id, eng=None):
    """Run operation ``op_id`` unless it is finished or another worker runs it."""
    op = Operation.objects.select_related("environment__node").filter(pk=op_id).first()
    if op is None or op.is_finished or op.environment is None:
        return
    node = op.environment.node
    if settings.NODE_NAME and node.name != settings.NODE_NAME:
        log.warning("operation %s is for node %s, not %s: sending it there",
                    op_id, node.name, settings.NODE_NAME)
        dispatch.send(op.pk, node.queue)
        return
    with locks.ve_lock(op.environment.veid):
        op = Operation.objects.select_related(
            "environment__node", "environment__plan", "environment__template").get(pk=op_id)
        if op.is_finished:
            return
        if op.params.get("undoing"):  # killed while rolling back: finish the rollback
            _failed(Context.of(eng or engine(), op), op.error or "interrupted",
                    code=op.error_code or "interrupted")
            return
        if op.attempts >= MAX_ATTEMPTS:
            _failed(Context.of(eng or engine(), op),
                    f"gave up after {op.attempts} interrupted attempts", code="interrupted")
            return
        Operation.objects.filter(pk=op.pk).update(
            state=Operation.State.RUNNING, attempts=F("attempts") + 1,
            started=op.started or timezone.now(), message="started")
        _run(Context.of(eng or engine(), op))


def _run(ctx):
    op = ctx.op
    log.info("operation %s: %s VE %s (attempt %s)", op.pk, op.kind, ctx.ve.veid, op.attempts + 1)
    try:
        new_state = runners.RUNNERS[op.kind](ctx)
    except moving.GoesOnThere as there:
        _goes_on(op, there.node)
        return
    except VEError as exc:
        log.warning("operation %s failed: %s", op.pk, exc)
        _failed(ctx, exc.message if hasattr(exc, "message") else str(exc), exc)
    except Exception as exc:  # record it: an operation must always end
        log.exception("operation %s crashed", op.pk)
        _failed(ctx, f"internal error: {exc.__class__.__name__}: {exc}", exc)
    else:
        _set_state(ctx, new_state or _observed_state(ctx))
        _finish(op, Operation.State.SUCCEEDED,
                message="; ".join(["done"] + ctx.notes)[:200])


def _goes_on(op, node):
    """Record ``op``'s VE on ``node`` and queue ``op`` again for it there (at once: no
    moment where that node sees the operation running without its worker). That
    node's relay sends it if Redis does not take it now."""
    def record():
        with transaction.atomic():
            VE.objects.filter(pk=op.environment_id).update(node=node)
            # Its interrupted attempts are counted afresh there (MAX_ATTEMPTS per node).
            Operation.objects.filter(pk=op.pk).update(state=Operation.State.QUEUED, attempts=0,
                                                      message="going on at its new host")
    _with_retries(record)
    live.changed(op.environment.veid)
    dispatch.send(op.pk, node.queue)


def _failed(ctx, error, exc=None, code=None):
    """End the operation as failed with ``error`` and its code (``code``, else ``exc``'s)."""
    code = code or error_code(exc)
    undone = _run_undo(ctx, error, exc, code)
    _set_state(ctx, undone or _observed_state(ctx))
    _finish(ctx.op, Operation.State.FAILED, error=error, error_code=code)


def _run_undo(ctx, error, exc, code):
    """Roll a failed operation back (create, plan), marked so a crash mid-way resumes it."""
    undo = runners.UNDO.get(ctx.op.kind)
    if undo is None:
        return None
    params = {**ctx.op.params, "undoing": True}
    if isinstance(exc, runners.ForeignVE):
        params["foreign"] = True  # remembered if the rollback itself is interrupted
    Operation.objects.filter(pk=ctx.op.pk).update(params=params, error=error[:4000],
                                                  error_code=code, message="rolling back")
    try:
        return undo(ctx, exc)
    except Exception:
        if ctx.op.kind != Operation.Kind.CREATE:  # e.g. a plan's limits: reconcile's drift check
            log.exception("undo of operation %s failed; reconcile will correct it", ctx.op.pk)
            return None
        # Left for reconcile: a VE whose desired state is destroyed gets a destroy.
        log.exception("undo of operation %s failed; reconcile will remove the VE", ctx.op.pk)
        VE.objects.filter(pk=ctx.ve.pk).update(desired_state=VE.State.DESTROYED)
        return VE.State.UNKNOWN


def _observed_state(ctx):
    """The VE's state as the engine sees it; a stopped VE meant to be suspended is suspended."""
    try:
        running = ctx.engine.status(ctx.ve.veid).state == "running"
    except VEError:
        return VE.State.UNKNOWN
    if running:
        return VE.State.RUNNING
    desired = VE.objects.filter(pk=ctx.ve.pk).values_list("desired_state", flat=True).first()
    if desired == VE.State.HIBERNATED and ctx.engine.hibernated(ctx.ve.veid):
        return VE.State.HIBERNATED
    return VE.State.SUSPENDED if desired == VE.State.SUSPENDED else VE.State.STOPPED


def _set_state(ctx, state):
    _with_retries(lambda: VE.objects.filter(pk=ctx.ve.pk).update(actual_state=state))


def _finish(op, state, message="", error="", error_code=""):
    """Record the final state and wipe secrets from the stored parameters."""
    params = {k: v for k, v in op.params.items() if k not in SECRET_PARAMS}
    _with_retries(lambda: Operation.objects.filter(pk=op.pk).update(
        state=state, finished=timezone.now(), params=params,
        progress=100 if state == Operation.State.SUCCEEDED else F("progress"),
        message=message or ("failed" if error else ""), error=error[:4000],
        error_code=error_code))
    live.changed(op.environment.veid)  # its state was set just before
    if len(params) != len(op.params):
        dbsecure.forget_wiped()  # no copy of the wiped hash left in SQLite's WAL


def _with_retries(write, attempts=5):
    """A result reached on the node must reach the database: a busy database is
    waited for (else the operation would look interrupted and run again)."""
    for attempt in range(attempts):
        try:
            return write()
        except OperationalError:
            if attempt == attempts - 1:
                raise
            log.warning("database busy while recording a result; retrying")
            time.sleep(0.5 * (attempt + 1))

"""Running one operation on its node: lock, run, record. Safe to call twice.

``execute`` is what the Celery task and the reconcile call. Under the VE's
worker lock it re-reads the row: a finished operation is left alone (double
delivery); a queued one runs; a "running" one whose lock we could take was
interrupted (its worker died) and runs again, since runners converge.
"""

import logging
from collections import namedtuple

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from hosting.environments.models import VirtualEnvironment as VE
from ve import Engine
from ve.errors import VEError

from . import dispatch, locks, runners
from .models import Operation

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
SECRET_PARAMS = ("password_hash",)


class Context(namedtuple("Context", "engine op ve")):
    """What a runner gets: the engine, the operation and its VE."""

    __slots__ = ()

    def progress(self, percent, message):
        Operation.objects.filter(pk=self.op.pk).update(progress=percent, message=message[:200])


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
        if op.attempts >= MAX_ATTEMPTS:
            _failed(Context(eng or engine(), op, op.environment),
                    f"gave up after {op.attempts} interrupted attempts")
            return
        Operation.objects.filter(pk=op.pk).update(
            state=Operation.State.RUNNING, attempts=F("attempts") + 1,
            started=op.started or timezone.now(), message="started")
        _run(Context(eng or engine(), op, op.environment))


def _run(ctx):
    op = ctx.op
    log.info("operation %s: %s VE %s (attempt %s)", op.pk, op.kind, ctx.ve.veid, op.attempts + 1)
    try:
        new_state = runners.RUNNERS[op.kind](ctx)
    except VEError as exc:
        log.warning("operation %s failed: %s", op.pk, exc)
        _failed(ctx, exc.message if hasattr(exc, "message") else str(exc))
    except Exception as exc:  # record it: an operation must always end
        log.exception("operation %s crashed", op.pk)
        _failed(ctx, f"internal error: {exc.__class__.__name__}: {exc}")
    else:
        _set_state(ctx, new_state or _observed_state(ctx))
        _finish(op, Operation.State.SUCCEEDED, message="done")


def _failed(ctx, error):
    undone = _run_undo(ctx)
    _set_state(ctx, undone or _observed_state(ctx))
    _finish(ctx.op, Operation.State.FAILED, error=error)


def _run_undo(ctx):
    undo = runners.UNDO.get(ctx.op.kind)
    if undo is None:
        return None
    try:
        return undo(ctx)
    except Exception:
        log.exception("undo of operation %s failed; reconcile will retry", ctx.op.pk)
        return VE.State.UNKNOWN


def _observed_state(ctx):
    """The VE's state as the engine sees it (suspension is a dashboard notion)."""
    if ctx.ve.desired_state == VE.State.SUSPENDED:
        return VE.State.SUSPENDED
    try:
        return VE.State.RUNNING if ctx.engine.status(ctx.ve.veid).state == "running" \
            else VE.State.STOPPED
    except VEError:
        return VE.State.UNKNOWN


def _set_state(ctx, state):
    VE.objects.filter(pk=ctx.ve.pk).update(actual_state=state)


def _finish(op, state, message="", error=""):
    """Record the final state and wipe secrets from the stored parameters."""
    with transaction.atomic():
        params = {k: v for k, v in op.params.items() if k not in SECRET_PARAMS}
        Operation.objects.filter(pk=op.pk).update(
            state=state, finished=timezone.now(), params=params,
            progress=100 if state == Operation.State.SUCCEEDED else F("progress"),
            message=message or ("failed" if error else ""), error=error[:4000])

"""Reconcile one node: finish what was interrupted, then compare and report drift.

Runs on the node's own worker (it needs the engine). The database holds the
desired state and the inventory; the engine's files and cgroups hold what is
really there.
"""

import logging

from django.db import IntegrityError

from hosting.core.errors import Conflict

from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node
from ve.errors import NotFound, VEError

from . import dispatch, executor, locks, services
from .models import Operation
from .runners import config_of

log = logging.getLogger(__name__)


def node(name, eng=None):
    """Reconcile node ``name``; return a summary dict (also stored as node drift)."""
    eng = eng or executor.engine()
    resumed = _resume_interrupted(name, eng)
    drift, limit_fixes = _compare(name, eng)
    Node.objects.filter(name=name).update(drift=drift)
    return {"resumed": resumed, "drift": drift, "limit_fixes": limit_fixes}


def _resume_interrupted(name, eng):
    resumed = []
    running = Operation.objects.filter(state=Operation.State.RUNNING,
                                       environment__node__name=name).select_related("environment")
    for op in running:
        with locks.ve_lock(op.environment.veid, wait=False) as free:
            interrupted = free
        if interrupted:  # nobody holds its lock: its worker died mid-way
            log.warning("operation %s (%s VE %s) was interrupted; running it again",
                        op.pk, op.kind, op.environment.veid)
            executor.execute(op.pk, eng)
            resumed.append(str(op.pk))
    return resumed


def _compare(name, eng):
    drift, fixes = [], []
    try:
        on_node = {s.veid: s for s in eng.list()}
    except VEError as exc:
        return [f"cannot list VEs: {exc}"], fixes
    live = VE.objects.filter(node__name=name).exclude(actual_state=VE.State.DESTROYED) \
        .select_related("plan")
    known = set()
    for ve in live:
        known.add(ve.veid)
        if ve.operations.filter(state__in=Operation.UNFINISHED).exists():
            continue
        status = on_node.get(ve.veid)
        if status is None:
            if ve.actual_state != VE.State.CREATING:
                drift.append(f"VE {ve.veid} ({ve.hostname}) is missing on the node")
                VE.objects.filter(pk=ve.pk).update(actual_state=VE.State.UNKNOWN)
            continue
        _sync_state(ve, status, drift)
        if _limits_differ(eng, ve) and _queue_limit_fix(ve):
            fixes.append(ve.veid)
    for veid in sorted(set(on_node) - known):
        drift.append(f"VE {veid} runs on the node but is not in the dashboard")
    return drift, fixes


def _sync_state(ve, status, drift):
    seen = VE.State.RUNNING if status.state == "running" else VE.State.STOPPED
    if ve.desired_state == VE.State.SUSPENDED:
        if seen == VE.State.RUNNING:
            drift.append(f"VE {ve.veid} ({ve.hostname}) is suspended but running")
        seen = VE.State.SUSPENDED
    elif seen != ve.desired_state:
        drift.append(f"VE {ve.veid} ({ve.hostname}) should be {ve.desired_state} but is {seen}")
    if seen != ve.actual_state:
        VE.objects.filter(pk=ve.pk).update(actual_state=seen)


def _limits_differ(eng, ve):
    try:
        return eng.config(ve.veid).limits != config_of(ve).limits
    except (NotFound, VEError):
        return False


def _queue_limit_fix(ve):
    """Queue a 'set' so the VE gets its plan's limits (staff changed the plan)."""
    try:
        op = services.create(ve, Operation.Kind.SET, None, {})
    except (IntegrityError, Conflict):
        return False
    dispatch.on_commit(op)
    return True

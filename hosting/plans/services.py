"""Plan changes by staff reach the running VEs as 'set' operations."""

from django.db import transaction

from hosting.core import audit
from hosting.core.errors import Conflict
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import dispatch, services as operations
from hosting.operations.models import Operation

LIMIT_FIELDS = ("ram_mb", "swap_mb", "cpu_units", "cpu_limit_pct", "cpus", "processes")


def save(plan, user, before=None):
    """Save ``plan`` (validated); if its limits changed, queue them for its live VEs.

    ``before`` is the plan's engine limits before the edit (None for a new plan).
    Returns the operations queued. A VE busy with another operation gets the
    new limits from its node's next reconcile instead.
    """
    plan.full_clean()
    queued = []
    with transaction.atomic():
        plan.save()
        audit.record(user, "plan.save" if before else "plan.create", plan, name=plan.name,
                     limits=plan.engine_limits())
        if before is None or before == plan.engine_limits():
            return queued
        for ve in list(plan.environments.live().exclude(actual_state=VE.State.CREATING)
                       .select_related("node")):
            try:
                op = operations.create(ve, Operation.Kind.SET, user, {})
            except Conflict:
                continue
            dispatch.on_commit(op)
            queued.append(op)
    return queued


def retire(plan, user):
    """Stop selling ``plan``; its VEs keep running on it."""
    plan.active = False
    plan.save(update_fields=["active"])
    audit.record(user, "plan.retire", plan, name=plan.name)

"""Plan changes by staff reach the running VEs as 'set' operations."""

from django.db import transaction

from hosting.core import audit, roles
from hosting.core.errors import Conflict, Forbidden
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import dispatch, services as operations
from hosting.operations.models import Operation

from .models import Plan

LIMIT_FIELDS = ("ram_mb", "swap_mb", "cpu_units", "cpu_limit_pct", "cpus", "processes")


def save(plan, user, before=None):
    """Save ``plan`` (validated); if its limits changed, queue them for its live VEs.

    ``before`` is the plan's ``engine_settings()`` before the edit (None for a new
    plan). Returns the operations queued. A VE busy with another operation gets
    the new limits from its node's next reconcile instead. Forbidden if ``user``
    may not change the seccomp relaxation and it changed.
    """
    plan.full_clean()
    check_seccomp(plan, user, before)
    queued = []
    with transaction.atomic():
        plan.save()
        audit.record(user, "plan.save" if before else "plan.create", plan, name=plan.name,
                     limits=plan.engine_limits(),
                     **({"seccomp_allow": plan.seccomp_allow} if plan.seccomp_allow else {}))
        if before is None or before == {k: plan.engine_settings()[k] for k in before}:
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


def check_seccomp(plan, user, before=None):
    """Refuse a seccomp relaxation set or changed by a role that may not (roles.py)."""
    if before and "seccomp_allow" in before:
        old = before["seccomp_allow"]
    else:  # a new plan, or a caller that passed only the limits: what is stored counts
        old = Plan.objects.filter(pk=plan.pk).values_list("seccomp_allow", flat=True).first() \
            if plan.pk else ""
        old = old or ""
    if plan.seccomp_allow != old and not roles.can(user, "seccomp.manage"):
        raise Forbidden("only administrators may change the seccomp relaxation "
                        f"({roles.refusal(user)})", field="seccomp_allow")


def retire(plan, user):
    """Stop selling ``plan``; its VEs keep running on it."""
    plan.active = False
    plan.save(update_fields=["active"])
    audit.record(user, "plan.retire", plan, name=plan.name)

"""Staff roles: what each kind of staff member may see and do.

A login is staff when ``is_staff`` is set; its role (one StaffRole row) says what
it may do. A superuser is an administrator. A staff login without a role may do
nothing on the staff side (deny by default): give it a role in the admin.

Each staff page and API route names the capability it needs (``staff_required``
in decorators.py, ``StaffCan`` in api.py); services check the capability of the
operation kinds they queue (``operations.services.check_actor``), so a route
that forgot its guard still cannot make a support login change a plan.
"""

from django.db import models


class Role(models.TextChoices):
    ADMINISTRATOR = "administrator", "Administrator"
    SUPPORT = "support", "Support"
    BILLING = "billing", "Billing"
    AUDITOR = "auditor", "Auditor (read-only)"


A, S, B, R = Role.ADMINISTRATOR, Role.SUPPORT, Role.BILLING, Role.AUDITOR
EVERYONE = frozenset(Role)

# capability -> the roles that have it. "*.view" are reads; everything else writes.
CAPABILITIES = {
    # every VPS, its page, usage and operations (scoping: staff see all VPSes)
    "vps.view": EVERYONE,
    # start, stop, reboot, terminate, reinstall, root password, addresses, order for a
    # customer; open any VPS's web console (hosting/consoles/)
    "vps.operate": frozenset({A, S}),
    # suspend and resume a VPS (abuse: support; unpaid bills: billing)
    "vps.suspend": frozenset({A, S, B}),
    # move a VPS to another plan; grant extra traffic (both are sold)
    "vps.plan": frozenset({A, B}),
    "customers.view": EVERYONE,
    "customers.manage": frozenset({A, B}),  # create, edit, suspend an account
    "plans.view": frozenset({A, B, R}),  # with prices and retired plans
    "plans.manage": frozenset({A, B}),
    # relax the VEs' seccomp filter (a plan's seccomp_allow, a VPS's override): it
    # weakens the host's defences, so it is the administrators' call, not sales' or
    # support's (docs/security.md); every staff role that sees a VPS or plan sees it
    "seccomp.manage": frozenset({A}),
    "templates.view": EVERYONE,
    "templates.manage": frozenset({A}),
    "nodes.view": frozenset({A, R}),
    "nodes.manage": frozenset({A}),
    "pools.view": frozenset({A, R}),
    "pools.manage": frozenset({A}),
    "reports.view": frozenset({A, R}),  # overcommit report, Prometheus metrics
    "audit.view": frozenset({A, R}),
    "tokens.view": frozenset({A, R}),  # every login's API keys (never the keys themselves)
    "tokens.manage": frozenset({A}),  # revoke anyone's key
    "admin.site": frozenset({A}),  # the Django admin at /admin/
}

# The capability an operation kind needs from a staff member who queues it.
KIND_CAPABILITY = {"suspend": "vps.suspend", "resume": "vps.suspend", "plan": "vps.plan",
                   "migrate": "nodes.manage"}  # where a VPS runs is the fleet's business
DEFAULT_KIND_CAPABILITY = "vps.operate"

# Where /staff/ sends each role: its first page (in the navigation's order).
HOME_PAGES = (("nodes.view", "staff-nodes"), ("vps.view", "staff-vps"))


def role_of(user):
    """The staff role of ``user`` (a Role), or None: customers, anonymous, inactive
    logins and staff logins not given a role have none."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if not user.is_staff:
        return None
    if user.is_superuser:
        return Role.ADMINISTRATOR
    cached = getattr(user, "_staff_role_cache", False)
    if cached is not False:
        return cached
    from .models import StaffRole
    row = StaffRole.objects.filter(user_id=user.pk).values_list("role", flat=True).first()
    role = Role(row) if row in Role.values else None
    user._staff_role_cache = role
    return role


def can(user, capability):
    """Whether ``user``'s staff role has ``capability`` (customers never do)."""
    if capability not in CAPABILITIES:
        raise KeyError(f"unknown capability {capability!r}")
    return role_of(user) in CAPABILITIES[capability]


def capabilities(user):
    """The set of capabilities ``user`` has (empty for customers)."""
    role = role_of(user)
    return frozenset(name for name, roles in CAPABILITIES.items() if role in roles)


def refusal(user):
    """The message a staff member gets when their role lacks a capability."""
    role = role_of(user)
    if role is None:
        return "this staff login has no role; an administrator must give it one"
    return f"your staff role ({role.label.lower()}) does not allow this"


def set_role(user, role):
    """Give staff login ``user`` the role ``role`` (a Role or its value)."""
    from .models import StaffRole
    StaffRole.objects.update_or_create(user=user, defaults={"role": Role(role)})
    user.__dict__.pop("_staff_role_cache", None)

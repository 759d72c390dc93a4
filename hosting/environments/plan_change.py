"""Changing a VPS's plan (up or down): the one service behind the API, portal and staff pages.

When the plan changes: at request time, in the transaction that checks the
placement rule under the node's row lock and queues the "plan" operation.
From that moment the node counts the VE with its new plan, so two upgrades
racing for a node's last room cannot both pass, and a billing system reading
the VPS back sees what it bought. The node worker then applies the new limits
(hosting/operations/runners.py: live where the engine can, a smaller disk at
the next stop). Should the node refuse (the data does not fit the smaller
disk after all), the operation fails and its undo puts the old plan back in
the database and on the node: the database never claims a plan the node
refused.

Customers may change plans only as the provider allows
(``settings.CUSTOMER_PLAN_CHANGES``): "upgrade" (default; a plan that takes
nothing away), "any", or "none". Staff and billing logins may make any change.
"""

import ipaddress
from collections import namedtuple

from django.conf import settings
from django.db import transaction
from django.db.models import Count, prefetch_related_objects

from hosting.core import audit, idempotency
from hosting.core.errors import Conflict, Forbidden, Invalid, Unprocessable
from hosting.ipam import services as ipam
from hosting.ipam.models import IPPool
from hosting.nodes.models import Node
from hosting.nodes.placement import Fleet, change_shortfall
from hosting.operations import dispatch, services as operations
from hosting.operations.models import Operation
from hosting.plans.models import Plan
from hosting.usage.models import UsageRollup, UsageSample

from . import disk_room
from .models import VirtualEnvironment as VE

Kind = Operation.Kind
State = VE.State
POLICIES = ("upgrade", "any", "none")
# States a VE may change plans in (those a "set" may run in; the runner works on stopped VEs).
CHANGEABLE = {State.RUNNING, State.STOPPED, State.SUSPENDED, State.UNKNOWN}
GIB = 1 << 30

# (label, plan field, how a value is shown, 0 means "no limit")
_RESOURCES = [
    ("RAM", "ram_mb", lambda v: f"{v} MiB", False),
    ("Swap", "swap_mb", lambda v: f"{v} MiB", False),
    ("CPUs", "cpus", lambda v: str(v) if v else "all", True),
    ("CPU limit", "cpu_limit_pct", lambda v: f"{v}%" if v else "none", True),
    ("CPU weight", "cpu_units", str, False),
    ("Processes", "processes", str, False),
    ("Disk", "disk_gib", lambda v: f"{v} GiB", False),
    ("Files (inodes)", "inodes", str, False),
    ("Traffic", "bandwidth_gib", lambda v: f"{v} GiB/month" if v else "unmetered", True),
    ("Port speed", "port_speed_mbit", lambda v: f"{v} Mbit/s", False),
    ("IPv4 addresses", "ipv4_count", str, False),
    ("IPv6 addresses", "ipv6_count", str, False),
]
ADDRESS_COUNTS = ((4, "ipv4_count"), (6, "ipv6_count"))

Change = namedtuple("Change", "label old new")


class Option(namedtuple("Option", "plan changes upgrade refusal")):
    """A plan as the Change plan page shows it: what changes, why it is refused ('' = it is not)."""

    __slots__ = ()


def policy():
    """What customers may do; an unknown setting allows nothing (fails closed)."""
    value = getattr(settings, "CUSTOMER_PLAN_CHANGES", "upgrade")
    return value if value in POLICIES else "none"


def is_upgrade(old, new):
    """True when ``new`` takes nothing away from ``old`` (every resource at least as big)."""
    return not taken_away(old, new)


def taken_away(old, new):
    """The labels of the resources ``new`` has less of than ``old`` (0 = unlimited counted)."""
    less = []
    for label, field, _show, zero_is_unlimited in _RESOURCES:
        before, after = getattr(old, field), getattr(new, field)
        if zero_is_unlimited and after == 0:
            continue
        if (zero_is_unlimited and before == 0) or after < before:
            less.append(label)
    return less


def changes(old, new):
    """What differs between two plans, as (label, old, new) for people."""
    rows = [Change(label, show(getattr(old, field)), show(getattr(new, field)))
            for label, field, show, _zero in _RESOURCES
            if getattr(old, field) != getattr(new, field)]
    if old.monthly_price != new.monthly_price:
        rows.append(Change("Price per month", str(old.monthly_price), str(new.monthly_price)))
    return rows


def options(ve, user):
    """Every active plan other than ``ve``'s, with what changes and why it would be refused.

    The refusals are those ``change`` would give but busy (state, policy,
    template, disk use, room on the node); ``change`` checks again, under the locks.
    """
    node = Node.objects.get(pk=ve.node_id)
    usage = latest_disk_usage(ve)
    # Read once for every plan below, not once per plan.
    prefetch_related_objects([ve], "addresses")
    pools = _pools_of(node)
    room = Fleet([node]).rooms[0]  # what placement sees there, for every plan below
    result = []
    for plan in Plan.objects.filter(active=True).exclude(pk=ve.plan_id) \
            .prefetch_related("templates"):  # _check_offer reads each plan's
        try:
            _check_state(ve, user)
            _check_offer(ve, plan, user)
            _check_disk(ve, plan, usage)
            _check_room(node, ve, plan, room)
            _check_addresses(node, ve, plan, pools)
            refusal = ""
        except (Invalid, Forbidden, Conflict) as exc:
            refusal = exc.message
        result.append(Option(plan, changes(ve.plan, plan), is_upgrade(ve.plan, plan), refusal))
    return result


def change(ve, plan, user, idempotency_key=None):
    """Move ``ve`` to ``plan`` for ``user``; return the queued "plan" Operation.

    Returns None when ``ve`` already has ``plan`` (nothing to do). The same
    ``idempotency_key`` again returns the first request's operation (Unprocessable
    if that was a change to another plan). Raises
    Invalid (retired plan, template not offered), Forbidden (customer policy,
    suspended account) or Conflict (busy or wrong state, data does not fit
    the disk, no room on the node); nothing changes then.
    """
    operations.check_actor(user, Kind.PLAN)
    try:
        return _change(ve, plan, user, idempotency_key)
    except operations.Replay as replay:
        return _same_request(replay.op, ve, plan)


def _change(ve, plan, user, idempotency_key):
    with transaction.atomic():
        if idempotency_key:
            earlier = Operation.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is not None:
                return _same_request(earlier, ve, plan)
        ve = VE.objects.select_for_update().select_related("plan").get(pk=ve.pk)
        if ve.plan_id == plan.pk:
            return None
        _check_state(ve, user)
        _check_offer(ve, plan, user)
        _check_disk(ve, plan, latest_disk_usage(ve))
        # Under the node's row lock (PostgreSQL; SQLite serialises writers), as orders are.
        node = Node.objects.select_for_update().get(pk=ve.node_id)
        _check_room(node, ve, plan)
        old = ve.plan
        added = _add_addresses(ve, node, plan)  # a Conflict rolls everything back
        # Names for people, ids for the undo (a plan may be renamed meanwhile).
        op = operations.create(ve, Kind.PLAN, user, {"plan": plan.name, "from": old.name,
                                                     "plan_id": plan.pk, "from_id": old.pk,
                                                     "added": added},
                               idempotency_key)
        ve.plan = plan
        ve.save(update_fields=["plan"])
        audit.record(user, "ve.plan", ve, operation=str(op.pk), plan=plan.name, previous=old.name,
                     upgrade=is_upgrade(old, plan), **({"addresses_added": added} if added else {}))
        dispatch.on_commit(op)
    return op


def _same_request(earlier, ve, plan):
    """The operation a key made before; another VPS or action is a 409, another plan a 422
    (the same action with a changed body, as hosting/core/idempotency.py answers it)."""
    if earlier.environment_id != ve.pk or earlier.kind != Kind.PLAN:
        raise Conflict("this idempotency key was already used for a different request")
    if earlier.params.get("plan") != plan.name:
        raise Unprocessable("this Idempotency-Key was already used for a change to plan "
                            f"{earlier.params.get('plan')}; send a new key for a new request",
                            code=idempotency.REUSED)
    return earlier


def _check_state(ve, user):
    if ve.actual_state not in CHANGEABLE:
        what = {State.CREATING: "it is still being created",
                State.DESTROYED: "it has been terminated"}.get(ve.actual_state, ve.actual_state)
        raise Conflict(f"cannot change the plan of VPS {ve.hostname}: {what}")
    if ve.desired_state == State.SUSPENDED and not user.is_staff:
        raise Conflict(f"VPS {ve.hostname} is suspended; contact support")


def _check_offer(ve, plan, user):
    """Retired plans, plans without the VPS's OS, and the customer policy."""
    if not plan.active:
        raise Invalid(f"plan {plan.name} is not offered any more", field="plan")
    # A plan open to every template offers the VPS's own too, even a retired one:
    # changing plans installs nothing.
    chosen = {template.pk for template in plan.templates.all()}  # prefetched by options
    if chosen and ve.template_id not in chosen:
        raise Invalid(f"plan {plan.name} does not offer this VPS's OS ({ve.template}); "
                      "reinstall with one it offers first", field="plan")
    if user.is_staff:
        return
    allowed = policy()
    if allowed == "none":
        raise Forbidden("plan changes are made by support here; please contact them")
    less = taken_away(ve.plan, plan)
    if allowed == "upgrade" and less:
        words = [w if w[1:2].isupper() else w[0].lower() + w[1:] for w in less]  # RAM, swap
        raise Forbidden(f"plan {plan.name} has less {', '.join(words)} than "
                        f"{ve.plan.name}; only upgrades can be made here, ask support "
                        "for a downgrade")


DiskUse = namedtuple("DiskUse", "space inodes time")


def latest_disk_usage(ve):
    """The VE's disk use as last sampled on its node (DiskUse), or None if never measured.

    The web side never asks an engine: the node's usage samples are its eyes.
    Raw samples are kept a day; after that the latest rollup's maximum counts.
    """
    sample = (UsageSample.objects.filter(environment=ve, disk__isnull=False)
              .order_by("-time").values_list("disk", "inodes", "time").first())
    if sample is not None:
        return DiskUse(*sample)
    rollup = (UsageRollup.objects.filter(environment=ve, disk_max__isnull=False)
              .order_by("-time").values_list("disk_max", "inodes_max", "time").first())
    if rollup is not None:
        return DiskUse(int(rollup[0]), None if rollup[1] is None else int(rollup[1]), rollup[2])
    return None


def _check_disk(ve, plan, usage):
    """A smaller disk must hold the VPS's data (with a margin, see disk_room)."""
    if plan.disk_gib >= ve.plan.disk_gib and plan.inodes >= ve.plan.inodes:
        return
    if usage is None:
        raise Conflict(f"the disk use of VPS {ve.hostname} is not known yet, so a smaller "
                       "disk cannot be checked; try again once it has run a few minutes",
                       field="plan")
    refusal = disk_room.refusal(usage.space, usage.inodes, plan.disk_gib * GIB, plan.inodes)
    if refusal:
        raise Conflict(f"plan {plan.name} is too small: {refusal}", field="plan")


def _missing_addresses(ve, plan):
    """{IP version: how many more addresses ``plan`` includes than ``ve`` holds}."""
    held = [ipaddress.ip_address(a.address).version for a in ve.addresses.all()]
    return {version: getattr(plan, field) - held.count(version)
            for version, field in ADDRESS_COUNTS if getattr(plan, field) > held.count(version)}


def _pools_of(node):
    """The node's pools, each with how many of its addresses are held (``held``)."""
    return list(IPPool.objects.filter(nodes=node).annotate(held=Count("addresses")))


def _check_addresses(node, ve, plan, pools=None):
    """The node's pools must have the addresses the new plan adds (none are taken away:
    staff remove the ones to give back, as the VPS's owner may be using any of them).
    ``pools``: ``_pools_of(node)`` if the caller read them already."""
    missing = _missing_addresses(ve, plan)
    if missing and pools is None:
        pools = _pools_of(node)
    for version, count in missing.items():
        free = sum(ipam.free_count(pool, pool.held) for pool in pools
                   if pool.version == version)
        if free < count:
            raise Conflict(f"node {node.name} has no room for plan {plan.name}: "
                           f"{count} more IPv{version} address(es) needed, {free} free",
                           field="plan")


def _add_addresses(ve, node, plan):
    """Give ``ve`` the addresses ``plan`` includes beyond those it holds; return them."""
    _check_addresses(node, ve, plan)
    added = []
    for version, count in _missing_addresses(ve, plan).items():
        added += [str(a) for a in ipam.allocate(ve, node, version, count)]
    return added


def _check_room(node, ve, plan, room=None):
    lacking = change_shortfall(node, ve.plan, plan, room)
    if lacking:
        raise Conflict(f"node {node.name} has no room for plan {plan.name}: "
                       f"no {', '.join(lacking)} left", field="plan")

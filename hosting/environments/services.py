"""Ordering, reinstalling and re-keying VPSes: the customer-facing services."""

import ipaddress
import random

from django.contrib.auth import authenticate
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from hosting.core import audit, shadow, twofactor
from hosting.core.errors import Conflict, Forbidden, Invalid, ServiceError
from hosting.ipam import services as ipam
from hosting.nodes.models import Node
from hosting.operations import dispatch, services as operations
from hosting.operations.models import Operation
from ve import validate
from ve.errors import InvalidConfig

from . import placing
from .models import VirtualEnvironment as VE
from .validators import validate_hostname

FIRST_VEID = 101
MAX_VEID = 65534
MIN_PASSWORD = 8
MAX_PASSWORD = 256  # the VE's crypt(3) refuses very long keys at login (libxcrypt: "*0")
REAUTH_FAILURES = 10  # per user and REAUTH_WINDOW seconds
REAUTH_WINDOW = 600


def hash_password(password):
    """Return the sha512-crypt hash of ``password``: all that leaves the web process."""
    if len(password or "") < MIN_PASSWORD:
        raise Invalid(f"the root password needs at least {MIN_PASSWORD} characters",
                      field="root_password")
    if len(password.encode()) > MAX_PASSWORD or "\0" in password:
        raise Invalid(f"the root password may have at most {MAX_PASSWORD} bytes",
                      field="root_password")
    hashed = shadow.hash_password(password)  # sha512-crypt, what /etc/shadow expects
    try:
        return validate.password_hash(hashed)
    except (InvalidConfig, TypeError) as exc:  # crypt failed: never queue an unusable hash
        raise Invalid("this root password cannot be used; choose another",
                      field="root_password") from exc


def check_ssh_key(key):
    """Return the key stripped, or '' for none; Invalid when it is not one public key."""
    if not key or not key.strip():
        return ""
    try:
        return validate.ssh_public_key(key)
    except InvalidConfig as exc:
        raise Invalid(exc.message, field="ssh_key") from exc


def reauthenticate(user, password, code=None):
    """Refuse a sensitive action unless ``password`` is the user's own login password
    and, for a user with two-factor sign-in, ``code`` a current code of theirs.

    After REAUTH_FAILURES wrong answers in REAUTH_WINDOW seconds every attempt
    is refused, so a stolen session cannot guess the password here.
    """
    key = f"reauth-failures:{user.pk}"
    if cache.get(key, 0) >= REAUTH_FAILURES:
        raise Forbidden("too many wrong passwords; try again in a few minutes")
    if not password or authenticate(username=user.get_username(), password=password) is None:
        cache.add(key, 0, REAUTH_WINDOW)
        cache.incr(key)
        raise Forbidden("your current password is needed for this (and it did not match)")
    if twofactor.enrolled(user) and not twofactor.verify(user, code):
        cache.add(key, 0, REAUTH_WINDOW)
        cache.incr(key)
        raise Forbidden("your current two-factor code is needed for this (and it did not "
                        "match)")


def order(customer, plan, template, hostname, requested_by, root_password="", ssh_key="",
          idempotency_key=None, backup=None, node=None):
    """Place a new VE for ``customer`` and queue its creation; return the Operation.

    ``backup`` (a Backup): the new VE gets that backup's disk instead of a fresh
    ``template`` (its logins stay as backed up unless a password or key is given);
    it is made on a node that can read the backup's repository and, if it is to live
    elsewhere, moved there (placing.where). ``node``: staff's choice of node for it
    (those who may move VPSes only).
    """
    operations.check_actor(requested_by, Operation.Kind.MIGRATE if node else None)
    if not customer.is_active:
        raise Forbidden("the account is suspended; new orders are refused")
    if not plan.active:
        raise Invalid(f"plan {plan.name} is not offered any more", field="plan")
    if backup is None and not plan.offered_templates().filter(pk=template.pk).exists():
        raise Invalid(f"plan {plan.name} does not offer template {template.name}", field="template")
    hostname = hostname.lower()  # DNS names are case-insensitive (RFC 4343)
    try:
        validate_hostname(hostname)
    except ValidationError as exc:
        raise Invalid(exc.messages[0], field="hostname") from exc
    if not root_password and not ssh_key and backup is None:
        raise Invalid("give a root password or an SSH key to log in with", field="root_password")
    params = {"ssh_key": check_ssh_key(ssh_key)}
    if backup is not None:
        params["backup"] = backup.backup_id
    if root_password:
        params["password_hash"] = hash_password(root_password)
    try:
        return _order(customer, plan, template, hostname, requested_by, params, idempotency_key,
                      backup, node)
    except (ServiceError, IntegrityError, operations.Replay):
        # A concurrent retry with the same key may have won (e.g. on the host name):
        # the answer to a replay is the first request's operation.
        earlier = idempotency_key and Operation.objects.filter(
            idempotency_key=idempotency_key).first()
        if not earlier:
            raise
        return _same_order(earlier, customer)


def _same_order(earlier, customer):
    if earlier.kind != Operation.Kind.CREATE or earlier.environment.owner_id != customer.pk:
        raise Conflict("this idempotency key was already used for a different request")
    return earlier


def _order(customer, plan, template, hostname, requested_by, params, idempotency_key,
           backup=None, chosen=None):
    with transaction.atomic():
        if idempotency_key:
            earlier = Operation.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is not None:
                return _same_order(earlier, customer)
        if VE.objects.named(hostname).live().exists():
            raise Invalid(f"host name {hostname} is taken", field="hostname")
        node, home = (placing.node_for(plan, chosen), None) if backup is None \
            else placing.where(backup, plan, chosen)
        ve = _insert(customer, plan, node, template, hostname)
        # Its addresses are its home's: it runs nowhere before it is there.
        ipam.allocate(ve, home or node, 4, plan.ipv4_count)
        ipam.allocate(ve, home or node, 6, plan.ipv6_count)
        if home is not None:
            params["to"] = home.name
        op = operations.create(ve, Operation.Kind.CREATE, requested_by, params, idempotency_key)
        audit.record(requested_by, "ve.order", ve, operation=str(op.pk), plan=plan.name,
                     template=template.name, node=(home or node).name,
                     **({"backup": backup.backup_id, "restored_on": node.name} if backup else {}))
        dispatch.on_commit(op)
    return op


def reinstall(ve, user, template=None, root_password="", ssh_key="", keep_old=False,
              idempotency_key=None):
    """Queue a reinstall of ``ve`` from ``template`` (default: its current one).

    ``keep_old``: the old files stay in /old-root of the new system.
    """
    template = template or ve.template
    if not ve.plan.offered_templates().filter(pk=template.pk).exists() and template != ve.template:
        raise Invalid(f"plan {ve.plan.name} does not offer template {template.name}",
                      field="template")
    params = {"template": template.name, "ssh_key": check_ssh_key(ssh_key),
              "keep_old": bool(keep_old)}
    if root_password:
        params["password_hash"] = hash_password(root_password)
    return operations.request(ve, Operation.Kind.REINSTALL, user, params,
                              idempotency_key=idempotency_key)


def reset_password(ve, user, root_password, idempotency_key=None):
    """Queue setting the VE's root password (only its hash is kept, until done)."""
    return operations.request(ve, Operation.Kind.PASSWORD, user,
                              {"password_hash": hash_password(root_password)},
                              idempotency_key=idempotency_key)


def _next_veid(ahead=0):
    """One above the highest VEID in use (``ahead`` more), skipping VEIDs nodes hold
    outside the dashboard."""
    veid = (VE.objects.aggregate(top=Max("veid"))["top"] or FIRST_VEID - 1) + 1 + ahead
    unmanaged = {v for vs in Node.objects.values_list("unmanaged_veids", flat=True) for v in vs}
    while veid in unmanaged:
        veid += 1
    if veid > MAX_VEID:
        raise Conflict("no VEID left")
    return veid


def _insert(customer, plan, node, template, hostname):
    for attempt in range(5):
        # Orders at the same moment read the same highest VEID, and one waits for the
        # other's transaction to learn it lost: after a clash, look a little further
        # up (VEIDs need not be consecutive) rather than into the next clash.
        veid = _next_veid(ahead=random.randrange(8 ** attempt))
        try:
            with transaction.atomic():
                return VE.objects.create(veid=veid, owner=customer, plan=plan, node=node,
                                         template=template, hostname=hostname,
                                         shared_template=template.share_files,
                                         desired_state=VE.State.RUNNING,
                                         actual_state=VE.State.CREATING)
        except IntegrityError as exc:
            if VE.objects.named(hostname).live().exists():
                raise Invalid(f"host name {hostname} is taken", field="hostname") from exc
    raise Conflict("too many orders at once; try again")


def add_address(ve, user, version=None, address=None):
    """Give ``ve`` one more address (the next free one of IP ``version``, or ``address``)."""
    operations.check_actor(user, Operation.Kind.SET)
    with transaction.atomic():
        if address:
            given = ipam.claim(ve, ve.node, address)
        else:
            given = ipam.allocate(ve, ve.node, version, 1)[0]
        op = operations.request(ve, Operation.Kind.SET, user, {})
        audit.record(user, "ve.address_add", ve, address=str(given), operation=str(op.pk))
    return op


def remove_address(ve, user, address):
    """Take ``address`` from ``ve`` back into its pool (live on a running VE)."""
    operations.check_actor(user, Operation.Kind.SET)
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise Invalid(f"{address} is not an IP address", field="address") from None
    with transaction.atomic():
        if not ve.addresses.filter(address=address).exists():
            raise Invalid(f"VPS {ve.hostname} does not hold {address}", field="address")
        # The address stays the VE's (and out of the pool) until its node has
        # really dropped it: the 'set' runner releases it after the engine call.
        op = operations.request(ve, Operation.Kind.SET, user, {"release": [address]})
        audit.record(user, "ve.address_remove", ve, address=address, operation=str(op.pk))
    return op


def add_traffic(ve, user, extra_gib):
    """Staff grant ``extra_gib`` more traffic this month; a covered VE is set free at once."""
    from hosting.usage import traffic
    traffic.add_extra(ve, extra_gib)
    audit.record(user, "ve.traffic_added", ve, extra_gib=extra_gib)
    traffic.enforce(ve)
    return VE.objects.get(pk=ve.pk)

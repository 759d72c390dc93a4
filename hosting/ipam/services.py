"""Handing out and taking back addresses without races.

An address is held by a VE exactly while an IPAddress row points at it. The
unique ``address`` column is the referee: two orders that pick the same free
address both try to insert it and one of them loses, on SQLite and
PostgreSQL alike, so no lock table is needed.
"""

import ipaddress

from django.db import IntegrityError, transaction

from hosting.core.errors import Conflict, Invalid

from .models import IPAddress, IPPool

_ATTEMPTS = 20


def allocate(ve, node, version, count):
    """Give ``ve`` ``count`` addresses of IP ``version`` from pools of ``node``."""
    pools = [p for p in IPPool.objects.filter(nodes=node).order_by("name") if p.version == version]
    given = []
    for _ in range(count):
        for pool in pools:
            address = _claim(pool, ve)
            if address:
                given.append(address)
                break
        else:
            raise Conflict(f"no free IPv{version} address left on node {node.name}")
    return given


def claim(ve, node, address):
    """Give ``ve`` one specific free ``address`` from a pool of ``node``."""
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        raise Invalid(f"{address} is not an IP address", field="address") from None
    for pool in IPPool.objects.filter(nodes=node):
        first, last = ipaddress.ip_address(pool.first), ipaddress.ip_address(pool.last)
        if pool.gateway and wanted == ipaddress.ip_address(pool.gateway):
            raise Invalid(f"{wanted} is the gateway of pool {pool.name}", field="address")
        if wanted.version == first.version and first <= wanted <= last:
            try:
                with transaction.atomic():
                    return IPAddress.objects.create(pool=pool, address=str(wanted), environment=ve)
            except IntegrityError:
                raise Conflict(f"{wanted} is already in use") from None
    raise Invalid(f"{wanted} is not in a pool of node {node.name}", field="address")


def release(ve):
    """Put every address of ``ve`` back into its pool; return them."""
    addresses = list(ve.addresses.values_list("address", flat=True))
    IPAddress.objects.filter(environment=ve).delete()
    return addresses


def _claim(pool, ve):
    for _ in range(_ATTEMPTS):
        candidate = _first_free(pool)
        if candidate is None:
            return None
        try:
            with transaction.atomic():
                return IPAddress.objects.create(pool=pool, address=candidate, environment=ve)
        except IntegrityError:
            continue  # someone took it between our look and our insert
    return None


# How many candidates one look at the pool checks at first, and at most: each look asks
# about its window's addresses only (the unique index on ``address`` answers it), so a
# pool with thousands of addresses held is never read whole; windows double while full.
FIRST_WINDOW = 64
LARGEST_WINDOW = 1024


def _first_free(pool):
    """The lowest address of ``pool``'s range nobody holds (never its gateway), or None."""
    first, last = ipaddress.ip_address(pool.first), ipaddress.ip_address(pool.last)
    gateway = pool.gateway and ipaddress.ip_address(pool.gateway)
    start, size = int(first), FIRST_WINDOW
    while start <= int(last):
        window = [type(first)(n) for n in range(start, min(start + size, int(last) + 1))]
        held = set(IPAddress.objects.filter(address__in=[str(a) for a in window])
                   .values_list("address", flat=True))
        for address in window:
            if str(address) not in held and address != gateway:
                return str(address)
        start, size = start + size, min(size * 2, LARGEST_WINDOW)
    return None


def free_count(pool, held=None):
    """How many addresses of the pool nobody holds; ``held``: how many rows the pool has,
    if the caller counted them already (a list of pools counts them in one query)."""
    first, last = ipaddress.ip_address(pool.first), ipaddress.ip_address(pool.last)
    size = int(last) - int(first) + 1
    if pool.gateway and first <= ipaddress.ip_address(pool.gateway) <= last:
        size -= 1
    return size - (pool.addresses.count() if held is None else held)


def delete_refusal(pool):
    """Why ``pool`` may not be deleted ("" if it may): its addresses held by VEs would
    go with it (rows cascade) while the VEs keep using them."""
    held = pool.addresses.filter(environment__isnull=False).count()
    if held:
        return f"pool {pool.name} still has addresses in use: {held} held by VPSes"
    return ""


def change_refusal(pool, changes):
    """Why ``pool`` may not take ``changes`` ({field: value}) ("" if it may): a held
    address must stay inside its range and may not become the gateway, and a node whose
    VEs hold its addresses may not leave it."""
    held = list(pool.addresses.filter(environment__isnull=False)
                .select_related("environment__node"))
    if not held:
        return ""
    network = ipaddress.ip_network(changes.get("network", pool.network), strict=False)
    first = ipaddress.ip_address(changes.get("first", pool.first))
    last = ipaddress.ip_address(changes.get("last", pool.last))
    gateway = changes.get("gateway", pool.gateway)
    for row in held:
        address = ipaddress.ip_address(row.address)
        if address.version != first.version or not first <= address <= last \
                or address not in network:
            return (f"{row.address} of pool {pool.name} is in use by VPS "
                    f"{row.environment.veid}: the range must keep it")
        if gateway and address == ipaddress.ip_address(gateway):
            return f"{row.address} is in use by VPS {row.environment.veid}: not a gateway"
    if "nodes" in changes:
        kept = {node.pk for node in changes["nodes"]}
        for row in held:
            if row.environment.node_id not in kept:
                return (f"node {row.environment.node.name} has VPSes with addresses of pool "
                        f"{pool.name}: it must stay in the pool")
    return ""

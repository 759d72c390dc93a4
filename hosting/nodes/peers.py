"""Nodes trusting each other for migration, as the dashboard says.

Each node makes its own SSH keys (the private key never leaves it) and its
chores worker reports the public halves, its migration sshd's address
(HOSTING_MIGRATE_ADDRESS) and its OS templates on its Node row. The same task
then makes the node trust exactly the other nodes of the dashboard: their keys
may push VEs here (bound to the receiver, never a shell) and their sshds' host
keys are the only ones it pushes to. A node deleted from the dashboard loses
both at the next sync. See docs/security.md: a node's key is worth root on
the nodes that trust it.
"""

import logging

from django.conf import settings

from ve.errors import VEError
from ve.migrate import identity

from .models import Node

log = logging.getLogger(__name__)

SELF_BUILT = "busybox"  # from Debian's busybox-static: no network needed


def sync(name, engine):
    """Report this node's identity and trust its peers'; return what changed."""
    node = report(name, engine)
    return {"reported": node.migrate_address, **trust_peers(name, engine)}


def report(name, engine):
    """Make this node's keys if needed and record them, its address and templates."""
    key, host_key = identity.ensure_keys(engine.layout)
    values = {"migrate_key": key, "migrate_host_key": host_key,
              "migrate_address": settings.MIGRATE_ADDRESS,
              "templates": _templates(engine)}
    node, _ = Node.objects.get_or_create(name=name)
    changed = [field for field, value in values.items() if getattr(node, field) != value]
    for field in changed:
        setattr(node, field, values[field])
    if changed:
        node.save(update_fields=changed)
    return node


def _templates(engine):
    """The node's OS templates, names sorted. Busybox, which a node builds from its own
    packages, is built first if missing: a fresh node can then take VPSes moved to it
    (a move goes only to a node with the VPS's template, for its reinstalls)."""
    names = {t.name for t in engine.template_list()}
    if SELF_BUILT not in names:
        try:
            engine.template_build(SELF_BUILT)
            names.add(SELF_BUILT)
        except VEError as exc:
            log.warning("template %s could not be built here: %s", SELF_BUILT, exc)
    return sorted(names)


def trust_peers(name, engine):
    """Trust exactly the other nodes that reported an identity."""
    peers = Node.objects.exclude(name=name).exclude(migrate_key="")
    keys, hosts = [], {}
    for peer in peers:
        try:
            keys.append(identity.checked_key(peer.migrate_key))
            identity.split_address(peer.migrate_address)
            hosts[peer.migrate_address] = identity.checked_key(peer.migrate_host_key)
        except VEError as exc:  # one bad row must not cut this node off from the others
            log.warning("node %s: its migration identity is not usable (%s)", peer.name, exc)
    command = identity.receiver_command(engine.layout, engine.cgroups.parent)
    return {"trusted": identity.trust_only(engine.layout, keys, command),
            "known": identity.know_only(engine.layout, hosts)}

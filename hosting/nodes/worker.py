"""The node side of a root worker: register, heartbeat, reconcile on start.

A worker started with HOSTING_NODE_NAME serves that node: it consumes queue
``node.<name>``, reports the host's facts every NODE_HEARTBEAT_SECONDS (which
also keeps the node online), and asks its own queue to reconcile at start-up
and every few heartbeats. The heartbeat thread only talks to the database;
engine work always happens in the pool's task processes.
"""

import logging
import os
import threading

from celery import signals
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

log = logging.getLogger(__name__)

RECONCILE_EVERY = 6  # heartbeats
EVENTS_EVERY = 0.5  # seconds between looks for VEs that ended by themselves
_stop = threading.Event()


def heartbeat(name):
    """Record this host's facts and mark the node online (a draining node stays draining)."""
    from ve import host

    from .models import Node
    facts = host.facts(os.environ.get("VE_ROOT") or "/var/lib/ve")
    node, _ = Node.objects.get_or_create(name=name)
    for field, value in facts.items():
        setattr(node, field, value)
    node.last_heartbeat = timezone.now()
    # Only the facts: staff's ratios and draining, reconcile's drift stay as they are.
    node.save(update_fields=[*facts, "last_heartbeat"])
    Node.objects.filter(pk=node.pk, state=Node.State.OFFLINE).update(state=Node.State.ONLINE)
    node.refresh_from_db(fields=["state"])
    return node


def _reconcile_soon(name):
    """Ask this node's own queue to reconcile and count traffic (both need the engine)."""
    from hosting.operations.dispatch import send_to_node
    send_to_node(name, "hosting.operations.tasks.reconcile_node")
    send_to_node(name, "hosting.usage.tasks.collect_traffic")


def _beat_forever(name):
    beats = 0
    sample_every = max(1, round(settings.NODE_SAMPLE_SECONDS / settings.NODE_HEARTBEAT_SECONDS))
    while not _stop.wait(settings.NODE_HEARTBEAT_SECONDS):
        try:
            close_old_connections()
            heartbeat(name)
            beats += 1
            if beats % RECONCILE_EVERY == 0:
                _reconcile_soon(name)
            if beats % sample_every == 0:
                from hosting.operations.dispatch import send_to_node
                # Stale samples would only crowd a busy pool and skew the rates.
                send_to_node(name, "hosting.usage.tasks.sample_node",
                             expires=settings.NODE_SAMPLE_SECONDS)
        except Exception:  # a database hiccup must not end the heartbeat
            log.exception("heartbeat of node %s failed", name)


def _follow_events(name):
    """Record VEs that rebooted, powered off or crashed by themselves as it happens
    (the node watcher's events): the customer's page shows it within a second, and a
    VE that should run but stopped is looked at by reconcile at once."""
    from hosting.operations import executor, node_events
    eng = executor.engine()
    while not _stop.wait(EVENTS_EVERY):
        try:
            if eng.events():
                close_old_connections()
                if node_events.consume(name, eng):
                    _reconcile_soon(name)
        except Exception:  # a database hiccup must not end the thread
            log.exception("events of node %s not recorded", name)


@signals.worker_ready.connect
def _on_ready(sender=None, **kwargs):
    name = settings.NODE_NAME
    if not name:
        return
    heartbeat(name)
    log.info("node %s: worker ready, reconciling", name)
    _reconcile_soon(name)  # after a node boot, this starts the VEs that should run
    threading.Thread(target=_beat_forever, args=(name,), name="heartbeat", daemon=True).start()
    threading.Thread(target=_follow_events, args=(name,), name="events", daemon=True).start()


@signals.worker_shutdown.connect
def _on_shutdown(sender=None, **kwargs):
    name = settings.NODE_NAME
    if not name:
        return
    _stop.set()
    from .models import Node
    try:
        Node.objects.filter(name=name, state=Node.State.ONLINE).update(state=Node.State.OFFLINE)
    except Exception:
        log.exception("could not mark node %s offline", name)

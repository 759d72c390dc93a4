"""The node side of the root workers: register, heartbeat, relay, reconcile.

A node runs two root workers with HOSTING_NODE_NAME set: the operations
worker consumes ``node.<name>`` (lifecycle operations only, so they always
find a free slot), the chores worker ``node.<name>.chores`` (usage sampling,
traffic, reconcile). The operations worker's main process reports the host's
facts every NODE_HEARTBEAT_SECONDS (which keeps the node online), sends the
chores (reconcile at start-up and every few heartbeats), records what VEs did
by themselves, and relays operations whose message is not in Redis
(``operations/relay.py``), at once whenever it (re)connects to Redis. Its
threads only talk to the database and Redis; engine work always happens in
the pools' task processes.
"""

import logging
import os
import threading

from celery import bootsteps, signals
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from hosting.celery import app

log = logging.getLogger(__name__)

RECONCILE_EVERY = 6  # heartbeats
EVENTS_EVERY = 0.5  # seconds between looks for VEs that ended by themselves
_stop = threading.Event()
_stop_on_shutdown = False  # set in the operations worker, which owns the node's liveness


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


def _reconcile_soon(name, peers=False):
    """Ask this node's chores queue to reconcile and count traffic (both need the
    engine); with ``peers``, to bring its migration peers up to date first."""
    from hosting.operations.dispatch import send_to_node
    if peers:
        send_to_node(name, "hosting.operations.tasks.sync_peers")
    send_to_node(name, "hosting.operations.tasks.reconcile_node")
    send_to_node(name, "hosting.usage.tasks.collect_traffic")


def _peer_identities(name):
    """The other nodes' migration identities as the dashboard has them."""
    from .models import Node
    return sorted(Node.objects.exclude(name=name).values_list(
        "name", "migrate_key", "migrate_host_key", "migrate_address"))


def _beat_forever(name):
    beats = 0
    sample_every = max(1, round(settings.NODE_SAMPLE_SECONDS / settings.NODE_HEARTBEAT_SECONDS))
    peers_seen = None
    while not _stop.wait(settings.NODE_HEARTBEAT_SECONDS):
        try:
            close_old_connections()
            heartbeat(name)
            beats += 1
            peers_now = _peer_identities(name)
            if beats % RECONCILE_EVERY == 0:
                _reconcile_soon(name, peers=True)
            elif peers_now != peers_seen:
                # A node joined or made new keys: trust it now, not at the next
                # reconcile, or a move to it or from it is refused meanwhile.
                from hosting.operations.dispatch import send_to_node
                send_to_node(name, "hosting.operations.tasks.sync_peers")
            peers_seen = peers_now
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


def _relay_forever(name):
    """Every few seconds, send again operations whose message is not in Redis."""
    from hosting.operations import relay
    while not _stop.wait(settings.OPERATION_RELAY_SECONDS):
        try:
            close_old_connections()
            relay.relay(name, settings.OPERATION_RESEND_SECONDS)
        except Exception:  # a database or Redis hiccup must not end the thread
            log.exception("relay of node %s failed", name)


def serves_operations(app):
    """True in a worker that consumes its node's operations queue (not just chores)."""
    from .models import Node
    name = settings.NODE_NAME
    return bool(name) and Node(name=name).queue in (app.amqp.queues.consume_from or {})


def on_connected(consumer):
    """Called each time the worker's consumer (re)connects to Redis: the operations
    worker sends again what its previous connection may have held, at once."""
    if not serves_operations(consumer.app):
        return
    log.info("node %s: connected to Redis; sending again what has no message",
             settings.NODE_NAME)

    def recover():
        from hosting.operations import relay
        try:
            close_old_connections()
            relay.recover(settings.NODE_NAME)
        except Exception:
            log.exception("recovery of node %s's operations failed", settings.NODE_NAME)
        finally:
            connection.close()  # this thread's own
    threading.Thread(target=recover, name="recover", daemon=True).start()


class Connected(bootsteps.StartStopStep):
    """Calls ``on_connected`` each time the consumer (re)connects to Redis: Celery
    starts a consumer's steps again after it lost the connection."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c):
        on_connected(c)


app.steps["consumer"].add(Connected)


@signals.worker_ready.connect
def _on_ready(sender=None, **kwargs):
    name = settings.NODE_NAME
    if not name or sender is None or not serves_operations(sender.app):
        return  # the chores worker only runs what it is sent
    global _stop_on_shutdown
    _stop_on_shutdown = True
    heartbeat(name)
    log.info("node %s: worker ready, reconciling", name)
    _reconcile_soon(name, peers=True)  # after a node boot, this starts the VEs that should run
    for target, label in ((_beat_forever, "heartbeat"), (_follow_events, "events"),
                          (_relay_forever, "relay")):
        threading.Thread(target=target, args=(name,), name=label, daemon=True).start()


@signals.worker_shutdown.connect
def _on_shutdown(sender=None, **kwargs):
    name = settings.NODE_NAME
    if not name or not _stop_on_shutdown:
        return
    _stop.set()
    from .models import Node
    try:
        Node.objects.filter(name=name, state=Node.State.ONLINE).update(state=Node.State.OFFLINE)
    except Exception:
        log.exception("could not mark node %s offline", name)

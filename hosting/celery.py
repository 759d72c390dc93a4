"""The Celery app: web processes send operations, node workers run them.

Queues: ``hosting`` (housekeeping, any unprivileged worker) and two per
node, consumed only by that node's root workers: ``node.<name>`` (lifecycle
operations) and ``node.<name>.chores`` (sampling, traffic, reconcile).
"""

import functools
import logging
import os

from celery import Celery, signals
from celery.worker.consumer import Consumer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hosting.settings")

app = Celery("hosting")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)


def _sign_messages(app):
    """With HOSTING_SIGNING_* set (settings.SIGNING), every message this process
    sends is signed with its key, and it accepts only messages signed by a key
    in its trust store; nothing else is decoded (docs/security.md).

    Done at import, before any message is sent or received; the environment is
    read directly so that a process without keys still loads Django's settings
    only when it first needs them."""
    if all(os.environ.get(f"HOSTING_SIGNING_{v}") for v in ("KEY", "CERT", "TRUST")):
        app.setup_security(serializer="json")  # every other decoder is disabled


_sign_messages(app)


@signals.worker_init.connect
def _nodes_need_signing(sender=None, **kwargs):
    """A root node worker never runs unsigned messages: without signing keys it
    does not start (whoever can write to Redis could make it run anything)."""
    from django.conf import settings
    if settings.NODE_NAME and not settings.SIGNING:
        # SystemExit: Celery's signals log and swallow ordinary exceptions.
        raise SystemExit("refusing to start: node workers need HOSTING_SIGNING_KEY, "
                         "HOSTING_SIGNING_CERT and HOSTING_SIGNING_TRUST (docs/security.md)")


def _acks_free_their_slot():
    """An acknowledgement that Redis does not take still frees its prefetch slot.

    kombu's Redis QoS.ack first removes the message from the unacked index in
    Redis and only then frees the slot; when Redis is down or frozen at that
    moment the first step raises ("Couldn't ack"), the slot stays taken, and a
    worker whose every slot met that (the node worker runs a few operations at
    once, prefetch 1) never fetches again, although its connection comes back.
    Freeing the slot anyway is safe: the message stays in Redis's unacked set and
    is delivered again after the visibility timeout, when run_operation finds its
    operation finished and does nothing.
    """
    from kombu.transport import redis as redis_transport, virtual

    def ack(qos, delivery_tag):
        try:
            qos._remove_from_indices(delivery_tag).execute()
        finally:
            virtual.QoS.ack(qos, delivery_tag)

    redis_transport.QoS.ack = ack


_acks_free_their_slot()

RECONNECT_EVERY = 0.5  # seconds between attempts to reach a Redis that went away


class QuickReconnectConsumer(Consumer):
    """A consumer that retries a lost broker every RECONNECT_EVERY seconds.

    kombu's default waits 2, 4, 6 ... up to 30 s between attempts, so a worker
    could pick up its operations half a minute after Redis was back.
    """

    def ensure_connected(self, conn):
        conn.ensure_connection = functools.partial(
            conn.ensure_connection, interval_start=RECONNECT_EVERY, interval_step=0,
            interval_max=RECONNECT_EVERY)
        return super().ensure_connected(conn)

    def on_decode_error(self, message, exc):
        headers = message.headers or {}
        log.error("refused a message on %s (task %s, id %s): %s",
                  message.delivery_info.get("routing_key"), headers.get("task"),
                  headers.get("id"), exc)
        return super().on_decode_error(message, exc)

    def on_invalid_task(self, body, message, exc):
        headers = message.headers or {}
        log.error("refused a message on %s (task %s, id %s): %s",
                  message.delivery_info.get("routing_key"), headers.get("task"),
                  headers.get("id"), exc)
        return super().on_invalid_task(body, message, exc)

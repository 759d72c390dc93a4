"""The Celery app: web processes send operations, node workers run them.

Queues: ``hosting`` (housekeeping, any unprivileged worker) and two per
node, consumed only by that node's root workers: ``node.<name>`` (lifecycle
operations) and ``node.<name>.chores`` (sampling, traffic, reconcile).
"""

import functools
import os

from celery import Celery
from celery.worker.consumer import Consumer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hosting.settings")

app = Celery("hosting")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

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

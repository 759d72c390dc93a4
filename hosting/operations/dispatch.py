"""Sending an operation to its node's queue (after the transaction commits).

Tasks are sent by name through the Celery app, so this module imports no
task module (``tasks`` imports this one). Publishing is bounded: every Redis
call of a publish gives up after PUBLISH_TIMEOUT, so a dead or frozen Redis
costs a web request well under a second; the operation row stays queued and
the node worker's relay (``relay.py``) sends it once Redis answers again.
"""

import logging

from django.db import transaction

from . import live

log = logging.getLogger(__name__)

RUN_OPERATION = "hosting.operations.tasks.run_operation"
PUBLISH_TIMEOUT = 0.25  # seconds per Redis call (a frozen Redis never answers)
# One retry on a fresh connection, at most ~0.25 + 0.1 + 0.25 s in all.
_RETRY = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.1, "interval_max": 0.1}
_TRANSPORT = {"socket_timeout": PUBLISH_TIMEOUT, "socket_connect_timeout": PUBLISH_TIMEOUT}


def publish(task_name, args, queue, expires=None):
    """Send ``task_name(*args)`` to ``queue`` within a bounded time; raises if Redis fails."""
    from hosting.celery import app
    with app.connection_for_write(transport_options=_TRANSPORT) as conn:
        app.send_task(task_name, args=args, queue=queue, connection=conn, retry=True,
                      retry_policy=_RETRY, expires=expires)


def send(op_id, queue):
    """Publish ``run_operation(op_id)`` on ``queue`` now; False if the broker is down."""
    try:
        publish(RUN_OPERATION, [str(op_id)], queue)
    except Exception as exc:  # kombu raises many types for "no broker"
        log.warning("operation %s not sent to %s (will be requeued): %s", op_id, queue, exc)
        return False
    return True


def on_commit(op):
    """Send ``op`` to its VE's node once the current transaction commits, and tell the
    VPS's open pages that it has a new operation (live.py)."""
    op_id, queue, veid = op.pk, op.environment.node.queue, op.environment.veid

    def sent():
        if send(op_id, queue):  # a broker that took no message takes no notice either
            live.changed(veid)
    transaction.on_commit(sent)


def send_to_node(node_name, task_name, expires=None):
    """Send ``task_name(node_name)`` to that node's chores queue (runs on the node, with
    the engine, beside its operations). ``expires`` (seconds): drop it if no worker
    took it by then."""
    from hosting.nodes.models import Node
    try:
        publish(task_name, [node_name], Node(name=node_name).chores_queue, expires=expires)
    except Exception as exc:
        log.warning("%s for %s not sent: %s", task_name, node_name, exc)

"""Sending an operation to its node's queue (after the transaction commits)."""

import logging

from django.db import transaction

log = logging.getLogger(__name__)

# A broken broker must not turn a committed request into a 500: the operation
# stays queued and the periodic requeue sends it again.
_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


def send(op_id, queue):
    """Publish ``run_operation(op_id)`` on ``queue`` now; False if the broker is down."""
    from .tasks import run_operation
    try:
        run_operation.apply_async(args=[str(op_id)], queue=queue, retry=True,
                                  retry_policy=_RETRY)
    except Exception as exc:  # kombu raises many types for "no broker"
        log.warning("operation %s not sent to %s (will be requeued): %s", op_id, queue, exc)
        return False
    return True


def on_commit(op):
    """Send ``op`` to its VE's node once the current transaction commits."""
    op_id, queue = op.pk, op.environment.node.queue
    transaction.on_commit(lambda: send(op_id, queue))


def send_to_node(node_name, task_name, expires=None):
    """Send ``task_name(node_name)`` to that node's own queue (runs in its pool, with the
    engine). ``expires`` (seconds): drop it if no worker took it by then."""
    from hosting.celery import app
    from hosting.nodes.models import Node
    try:
        app.send_task(task_name, args=[node_name], queue=Node(name=node_name).queue,
                      retry=True, retry_policy=_RETRY, expires=expires)
    except Exception as exc:
        log.warning("%s for %s not sent: %s", task_name, node_name, exc)

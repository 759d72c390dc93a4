"""Celery tasks of operations: thin adapters over executor and reconcile."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import dispatch, executor, reconcile
from .models import Operation


@shared_task(name="hosting.operations.tasks.run_operation", acks_late=True,
             reject_on_worker_lost=True)
def run_operation(op_id):
    """Run one operation on this node (a second delivery finds it finished)."""
    executor.execute(op_id)


@shared_task(name="hosting.operations.tasks.reconcile_node", acks_late=True)
def reconcile_node(node_name):
    """Finish interrupted operations and compare the node with the database."""
    return reconcile.node(node_name)


@shared_task(name="hosting.operations.tasks.requeue_lost")
def requeue_lost():
    """Send again operations still queued long after they were requested.

    Their message was lost (broker down when the request committed) or is
    stuck with a dead worker; running them twice is harmless.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.OPERATION_REQUEUE_SECONDS)
    # An offline node's queue keeps its messages: sending more would only pile them up.
    lost = Operation.objects.filter(state=Operation.State.QUEUED, created__lt=cutoff,
                                    environment__isnull=False) \
        .exclude(environment__node__state="offline").select_related("environment__node")
    sent = 0
    for op in list(lost):
        sent += dispatch.send(op.pk, op.environment.node.queue)
    return sent

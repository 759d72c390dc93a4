"""Celery tasks of operations: thin adapters over executor, reconcile and relay."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from hosting.controlplane import not_this_node

from . import dispatch, executor, locks, reconcile, relay
from .models import Operation


@shared_task(name=dispatch.RUN_OPERATION, acks_late=True, reject_on_worker_lost=True)
def run_operation(op_id):
    """Run one operation on this node (a second delivery finds it finished)."""
    if _run_by_another_slot(op_id):
        return
    executor.execute(op_id)


def _run_by_another_slot(op_id):
    """True if the operation is running under its VE lock right now: a duplicate
    message must not hold a slot of the pool waiting for that lock."""
    row = Operation.objects.filter(pk=op_id, state=Operation.State.RUNNING) \
        .values_list("environment__veid", flat=True).first()
    if row is None:
        return False
    with locks.ve_lock(row, wait=False) as free:
        return not free


@shared_task(name="hosting.operations.tasks.reconcile_node", acks_late=True)
def reconcile_node(node_name):
    """Hand interrupted operations to the operations queue; compare the node with
    the database (runs in the chores pool)."""
    if not_this_node(node_name):
        return None
    return reconcile.node(node_name, hand_over=True)


@shared_task(name="hosting.operations.tasks.sync_peers")
def sync_peers(node_name):
    """Report this node's migration identity and trust the other nodes' (chores pool)."""
    if not_this_node(node_name):
        return None
    from hosting.nodes import peers
    return peers.sync(node_name, executor.engine())


@shared_task(name="hosting.operations.tasks.requeue_lost")
def requeue_lost():
    """Backstop of the node workers' relay: send again operations still queued long
    after they were requested and not waiting in their node's queue.

    Their message was lost (broker down when the request committed) or is
    stuck with a dead worker; running them twice is harmless.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.OPERATION_REQUEUE_SECONDS)
    # An offline node's queue keeps its messages: sending more would only pile them up.
    lost = Operation.objects.filter(state=Operation.State.QUEUED, created__lt=cutoff,
                                    environment__isnull=False) \
        .exclude(environment__node__state="offline").select_related("environment__node")
    sent, waiting = 0, {}
    for op in list(lost):
        queue = op.environment.node.queue
        if queue not in waiting:
            waiting[queue] = relay.inflight(queue, unacked=False) or set()
        if str(op.pk) not in waiting[queue]:
            sent += dispatch.send(op.pk, queue)
    return sent

"""Operations whose message is not in Redis are sent again within seconds.

The database is the source of truth: an operation is queued (or running)
there whether or not its message reached Redis. A message goes missing when
the web could not publish (Redis down or frozen: ``dispatch`` gives up
quickly), when Redis restarts without its last writes, or when a node worker
dies holding messages it had taken (Redis hands those out again only after
the visibility timeout, an hour). The node's own worker therefore looks
every few seconds for its operations without a message and sends them again
(``relay``), and at every (re)connection to Redis sends everything its
previous connection may have held (``recover``). A duplicate is harmless:
``executor.execute`` leaves a finished operation alone and the VE lock keeps
two deliveries from running at once.
"""

import base64
import json
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from kombu.serialization import loads, prepare_accept_content

from . import dispatch, locks
from .models import Operation

log = logging.getLogger(__name__)


def inflight(queue, unacked=True):
    """Ids of operations with a message waiting in ``queue`` (and, with ``unacked``,
    taken by a worker but not yet acknowledged). None if Redis cannot be read."""
    from hosting.celery import app
    try:
        with app.connection_for_write(transport_options=dispatch._TRANSPORT) as conn:
            channel = conn.default_channel
            raw = channel.client.lrange(queue, 0, -1)
            if unacked:  # of every queue: values are [message, exchange, routing key]
                raw += [json.dumps(entry[0]) for entry in map(json.loads, channel.client.hvals(
                    channel.unacked_key)) if entry[2] == queue]
    except Exception as exc:
        log.warning("cannot read queue %s: %s", queue, exc)
        return None
    return {op_id for item in raw if (op_id := _operation_of(item))}


def _operation_of(raw):
    """The operation id a kombu message (JSON) carries, if it is a run_operation.

    A signed message's body (Celery's ``auth`` serializer) is decoded, and its
    signature checked, by kombu's registry; a forged one counts as no message
    (the node refuses it, and the relay then sends the operation again)."""
    try:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != dispatch.RUN_OPERATION:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = loads(body, message.get("content-type"), message.get("content-encoding"),
                     accept=prepare_accept_content(settings.CELERY_ACCEPT_CONTENT))[0]
        return str(args[0])
    except Exception:  # not a message of ours (or a forged one): no operation
        return None


def unsent(node_name, min_age, unacked=True):
    """This node's unfinished operations older than ``min_age`` seconds that have no
    message in Redis and that nobody runs (a running one whose VE lock is free was
    interrupted). Call on the node: the VE locks are its files."""
    from hosting.nodes.models import Node
    cutoff = timezone.now() - timedelta(seconds=min_age)
    unfinished = Operation.objects.filter(state__in=Operation.UNFINISHED, created__lt=cutoff,
                                          environment__node__name=node_name)
    if not unfinished.exists():
        return []
    # Redis first, the database second: an operation taken and finished in between
    # is then no longer unfinished, instead of looking like one without a message.
    present = inflight(Node(name=node_name).queue, unacked) or set()
    missing = []
    for op_id, state, veid in list(unfinished.values_list("pk", "state", "environment__veid")):
        if str(op_id) in present:
            continue
        if state == Operation.State.RUNNING:
            with locks.ve_lock(veid, wait=False) as free:
                if not free:
                    continue  # it runs right now
                if not Operation.objects.filter(pk=op_id, state=state).exists():
                    continue  # it ended just now, and let go of the lock
        missing.append(op_id)
    return missing


def relay(node_name, min_age):
    """Send again this node's operations that lost their message; return how many."""
    from hosting.nodes.models import Node
    queue, sent = Node(name=node_name).queue, 0
    for op_id in unsent(node_name, min_age):
        log.info("operation %s has no message in %s: sending it again", op_id, queue)
        sent += dispatch.send(op_id, queue)
    return sent


def recover(node_name, min_age=0.0):
    """After (re)connecting: send every unfinished operation of this node that is not
    waiting in its queue (what the previous connection had taken is lost with it)."""
    from hosting.nodes.models import Node
    queue, sent = Node(name=node_name).queue, 0
    for op_id in unsent(node_name, min_age, unacked=False):
        sent += dispatch.send(op_id, queue)
    if sent:
        log.info("node %s: %s operation(s) sent again after connecting", node_name, sent)
    return sent

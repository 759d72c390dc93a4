"""The console's Celery task: run on the node's console queue by its threads-pool worker."""

from celery import shared_task

from hosting.controlplane import not_this_node

RELAY = "hosting.consoles.tasks.relay_console"


# acks_late off and a short expiry (set by the sender): a console is taken once, when the
# browser waits for it, and never redelivered after a worker restart.
@shared_task(name=RELAY, acks_late=False, ignore_result=True)
def relay_console(node_name, session_id, rows, cols):
    """Relay console session ``session_id`` of this node (consoles/relay.py)."""
    if not_this_node(node_name):
        return None
    from . import relay
    return relay.run(node_name, session_id, rows, cols)

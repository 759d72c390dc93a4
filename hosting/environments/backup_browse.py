"""Looking into a backup from the portal: a directory's entries, one file to download.

The backups are in a node's repository and the browser never reaches a node:
the web side writes a BackupFetch row and sends its id to the backup's node
(its chores queue), whose worker answers into the row (``backup_node.answer``); the web
request waits a few seconds for it (``look``). Listings are kept briefly so
clicking through a backup does not ask the node again and again; file contents
are removed once served. Files over BACKUP_DOWNLOAD_MAX_BYTES are refused:
those are restored into the VPS instead.
"""

import time
from datetime import timedelta

from django.utils import timezone

from hosting.core.errors import Conflict, Invalid
from hosting.nodes.models import Node
from hosting.operations import dispatch

from .backups import inside_path
from .models import BackupFetch

WAIT_SECONDS = 20.0  # restic reads the repository's index first: seconds on a big one
POLL_SECONDS = 0.1
KEEP_LISTINGS = timedelta(minutes=10)
FETCH = "hosting.environments.tasks.fetch_from_backup"  # sent by name (tasks is node side)


def look(backup, what, path, wait=WAIT_SECONDS):
    """The node's answer for ``backup``: ``what`` "list" (directory ``path``'s entries)
    or "file" (its bytes). Raises Invalid for what the node refused, Conflict if it
    did not answer in time."""
    path = inside_path(path, "path")
    BackupFetch.objects.filter(requested__lt=timezone.now() - KEEP_LISTINGS).delete()
    if what == BackupFetch.What.LIST:
        kept = BackupFetch.objects.filter(backup=backup, what=what, path=path, done=True,
                                          error="").first()
        if kept is not None:
            return kept
    row = BackupFetch.objects.create(backup=backup, what=what, path=path)
    ask(backup.node, row.pk)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        row.refresh_from_db()
        if row.done:
            break
        time.sleep(POLL_SECONDS)
    else:
        raise Conflict("the node keeping this backup did not answer in time; try again")
    if row.error:
        row.delete()
        raise Invalid(row.error, field="path")
    if what == BackupFetch.What.FILE:
        BackupFetch.objects.filter(pk=row.pk).delete()  # served once, not kept
    return row


def ask(node_name, fetch_id):
    """Send fetch ``fetch_id`` to node ``node_name``'s chores worker (which answers with
    ``backup_node.answer``)."""
    dispatch.publish(FETCH, [node_name, fetch_id], Node(name=node_name).chores_queue,
                     expires=int(WAIT_SECONDS) + 5)

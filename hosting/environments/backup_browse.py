"""Looking into a backup from the portal: a directory's entries, one file to download.

The backups are in a node's repository and the browser never reaches a node:
the web side writes a BackupFetch row and sends its id to the backup's node
(its chores queue), whose worker answers into the row (``answer``); the web
request waits a few seconds for it (``look``). Listings are kept briefly so
clicking through a backup does not ask the node again and again; file contents
are removed once served. Files over BACKUP_DOWNLOAD_MAX_BYTES are refused:
those are restored into the VPS instead.
"""

import io
import logging
import posixpath
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from hosting.core.errors import Conflict, Invalid
from hosting.nodes.models import Node
from hosting.operations import dispatch

from .backups import inside_path
from .models import Backup, BackupFetch

log = logging.getLogger(__name__)

WAIT_SECONDS = 20.0  # restic reads the repository's index first: seconds on a big one
POLL_SECONDS = 0.1
KEEP_LISTINGS = timedelta(minutes=10)
MAX_ENTRIES = 5000  # of one directory shown


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
    """Send fetch ``fetch_id`` to node ``node_name``'s chores worker."""
    from .tasks import FETCH
    dispatch.publish(FETCH, [node_name, fetch_id], Node(name=node_name).chores_queue,
                     expires=int(WAIT_SECONDS) + 5)


def answer(fetch_id, eng=None):
    """The node's side: fill fetch ``fetch_id`` in (entries, content or the error)."""
    from ve.errors import VEError
    from hosting.operations.executor import engine
    row = BackupFetch.objects.select_related("backup").filter(pk=fetch_id, done=False).first()
    if row is None:
        return None
    eng = eng or engine()
    entries, content, error = [], None, ""
    try:
        if row.what == BackupFetch.What.LIST:
            entries = sorted(eng.backup_listing(row.backup.backup_id, row.path),
                             key=lambda e: (e["type"] != "dir", e["name"]))[:MAX_ENTRIES]
        else:
            content = _file(eng, row.backup.backup_id, row.path)
    except VEError as exc:
        error = exc.message
    except _Refused as exc:
        error = str(exc)
    BackupFetch.objects.filter(pk=row.pk).update(done=True, entries=entries, content=content,
                                                 error=error[:300])
    return error or "ok"


class _Refused(Exception):
    """What the portal cannot serve (a directory, a file too big)."""


def _file(eng, backup_id, path):
    parent, name = posixpath.split(path)
    entry = next((e for e in eng.backup_listing(backup_id, parent) if e["name"] == name), None)
    if entry is None:
        raise _Refused(f"{path} is not in this backup")
    if entry["type"] != "file":
        raise _Refused(f"{path} is not a file (restore it into the VPS instead)")
    if entry["size"] > settings.BACKUP_DOWNLOAD_MAX_BYTES:
        raise _Refused(f"{path} is {entry['size'] / 2**20:.0f} MiB: files over "
                       f"{settings.BACKUP_DOWNLOAD_MAX_BYTES >> 20} MiB are restored into "
                       "the VPS instead")
    out = io.BytesIO()
    eng.backup_dump(backup_id, path, out)
    return out.getvalue()


def delete(backup_ids, eng=None):
    """The node's side of expiry: delete these backups (only of terminated VPSes whose
    time ran out: a message cannot make a node delete others) and their rows."""
    from hosting.operations.executor import engine
    from .backups import terminated_until
    now = timezone.now()
    doomed = [b for b in Backup.objects.filter(backup_id__in=backup_ids)
              .select_related("environment")
              if (terminated_until(b.environment) or now) < now]
    if not doomed:
        return 0
    eng = eng or engine()
    held = {b["full_id"] for b in eng.backups()}  # one deleted by hand is simply gone
    if held.intersection(b.backup_id for b in doomed):
        eng.backup_delete([b.backup_id for b in doomed if b.backup_id in held])
    Backup.objects.filter(pk__in=[b.pk for b in doomed]).delete()
    for ve in {b.environment for b in doomed}:
        if not ve.backups.exists():
            type(ve).objects.filter(pk=ve.pk).update(backup_bytes=0)
    log.info("deleted %d expired backup(s)", len(doomed))
    return len(doomed)

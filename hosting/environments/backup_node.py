"""The node's side of backups the dashboard asks for outside operations: answering a
look into a backup (``backup_browse``), and deleting the backups of VPSes terminated
long enough ago. Runs in the node's chores worker (``tasks``), as root, with the engine.
"""

import io
import logging
import posixpath

from django.conf import settings
from django.utils import timezone

from ve.errors import VEError

from hosting.operations.executor import engine

from .backups import terminated_until
from .models import Backup, BackupFetch

log = logging.getLogger(__name__)

MAX_ENTRIES = 5000  # of one directory shown


def answer(fetch_id, eng=None):
    """The node's side: fill fetch ``fetch_id`` in (entries, content or the error)."""
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

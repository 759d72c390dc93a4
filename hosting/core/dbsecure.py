"""Wiped secrets must not outlive the wipe in the database's own files.

SQLite runs with ``secure_delete=ON`` (settings: every connection), so the
bytes of a deleted or rewritten row are zeroed in its page and freed pages are
zeroed. But in WAL mode older images of that page stay in the -wal file until
a checkpoint copies the clean page into the database and the log restarts:
``forget_wiped()`` does that at once (and truncates the -wal to zero bytes).

PostgreSQL rewrites a row as a new version; the old one is a dead tuple until
VACUUM (autovacuum, which every PostgreSQL runs by default) reclaims its space.
Nothing here keeps a copy, so there is nothing more to do there.
"""

import logging

from django.db import connection

log = logging.getLogger(__name__)


def forget_wiped():
    """Call after a committed wipe of secrets: push SQLite's WAL into the database
    file and truncate it. No-op on PostgreSQL or inside a transaction."""
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy = cursor.fetchone()[0]
    if busy:  # a long reader held old pages: the next checkpoint will do it
        log.warning("WAL checkpoint after a secret wipe was blocked; it will run later")

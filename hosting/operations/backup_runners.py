"""Runners of the backup operations: back up, restore in place, restore some files.

The node's restic repository holds the backups (ve/engine/backups.py); after each
backup the plan's retention runs there and the VPS's rows follow what the node
then holds (hosting/environments/backups.py).
"""

import logging

from django.conf import settings

from ve.errors import NotFound, ResourceError, VEError

from hosting.environments import backups
from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes import peers
from hosting.nodes.models import Node

from . import moving

log = logging.getLogger(__name__)

# restic's progress moves the bar between these percents, at most this often
BACKUP_BAR = (10, 90)
RESTORE_BAR = (20, 95)
CREATE_BAR = (20, 65)  # the create runner goes on from 70 (starting the VPS)
PROGRESS_EVERY = 0.02  # of the whole, so a long backup writes ~50 progress rows


def repository_of(ctx):
    """This node's repository as the dashboard compares them (backups.repository_key)."""
    return backups.repository_key(ctx.ve.node.name, ctx.engine.backup_repository().url)


def backup(ctx):
    """Back up the VPS's disk (from a snapshot copy), then keep what its plan says."""
    ctx.progress(5, "taking a snapshot to back up")
    done = ctx.engine.backup(ctx.ve.veid, on_status=_bar(ctx, BACKUP_BAR, "backing up"),
                             limit_kib=ctx.ve.node.backup_limit_kib)
    repository = repository_of(ctx)
    held = ctx.engine.backups(ctx.ve.veid)
    full = next((b["full_id"] for b in held if b["full_id"].startswith(done["id"])), None)
    if full is None:
        raise NotFound(f"backup {done['id']} is not in the repository after it was taken",
                       ctx.ve.veid)
    backups.record(ctx.ve, {**done, "full_id": full}, ctx.ve.node.name, repository,
                   bool(ctx.op.params.get("scheduled")))
    ctx.progress(92, "removing backups the plan no longer keeps")
    plan = ctx.ve.plan
    if plan.backups_daily:  # staff's backups of a plan without any are kept until deleted
        ctx.engine.backup_forget(ctx.ve.veid, plan.backups_daily, plan.backups_weekly)
        held = ctx.engine.backups(ctx.ve.veid)
    backups.keep_only(ctx.ve, repository, [b["full_id"] for b in held])
    measure_stored(ctx)
    ctx.note(f"{done['data_added'] / 2**20:.1f} MiB new of {done['total_bytes'] / 2**20:.1f} "
             f"MiB, in {done['seconds']:.1f} s")
    return None


def _bar(ctx, between, doing):
    """An on_status(fraction) moving the operation's bar between percents ``between``,
    written at most every PROGRESS_EVERY of the whole."""
    reported = [0.0]

    def on_status(fraction):
        if fraction - reported[0] >= PROGRESS_EVERY:
            reported[0] = fraction
            low, high = between
            ctx.progress(int(low + (high - low) * fraction), f"{doing}: {fraction:.0%}")

    return on_status


def measure_stored(ctx):
    """Record what the VPS's backups hold in the repository (the usage reports' figure);
    an unreadable figure costs only the figure."""
    try:
        stored = ctx.engine.backup_stored_bytes(ctx.ve.veid)
    except VEError as exc:
        log.info("VE %s: backup storage not measured (%s)", ctx.ve.veid, exc)
        return
    VE.objects.filter(pk=ctx.ve.pk).update(backup_bytes=stored)


def restore(ctx):
    """Put the whole disk back as the backup holds it; a running VPS reboots on the way."""
    ctx.progress(RESTORE_BAR[0], "restoring the disk from the backup")
    done = ctx.engine.restore_backup(ctx.ve.veid, ctx.op.params["backup"],
                                     on_status=_bar(ctx, RESTORE_BAR, "restoring"))
    return VE.State.RUNNING if done["restarted"] else None


def restore_files(ctx):
    params = ctx.op.params
    ctx.progress(20, f"restoring {params['path']}")
    count = ctx.engine.restore_files(ctx.ve.veid, params["backup"], params["path"],
                                     params.get("into") or "/")
    ctx.note(f"{count} file(s) and folder(s) restored")
    return None


def create_from_backup(ctx, cfg):
    """The create runner's first step for a VPS ordered from a backup: its disk."""
    ctx.progress(CREATE_BAR[0], "restoring the backup onto the new disk")
    ctx.engine.create_from_backup(cfg, ctx.op.params["backup"],
                                  on_status=_bar(ctx, CREATE_BAR, "restoring"))


def home_elsewhere(ctx):
    """The node a VPS restored from this node's own backups is to live on (params "to",
    see hosting/environments/placing.py), or None."""
    name = ctx.op.params.get("to")
    return Node.objects.get(name=name) if name else None


def create_and_send_home(ctx, cfg, home):
    """Restore the new VPS here (where its backup is), move it to ``home`` and start it
    there; then the operation goes on at ``home`` (GoesOnThere). Run again after its
    worker died, it goes on from where the VPS is: a cut-off move is settled, a VPS
    found at ``home`` is not made twice."""
    veid = ctx.ve.veid
    if ctx.engine.settle_migration(veid) != "there" and not _made_there(ctx, home):
        if not moving.on_this_node(ctx):
            create_from_backup(ctx, cfg)
        ctx.progress(70, "moving the new VPS to its host")
        peers.trust_peers(settings.NODE_NAME, ctx.engine)
        ctx.engine.migrate(veid, home.migrate_address, live=False, start_there=True)
    raise moving.GoesOnThere(home)


def _made_there(ctx, home):
    """True if an earlier attempt moved the VPS to ``home`` and died before saying so
    (ResourceError if ``home`` cannot be asked: never guessed)."""
    if ctx.op.attempts == 0 or moving.on_this_node(ctx):
        return False
    return ctx.engine.status_at(ctx.ve.veid, home.migrate_address)["exists"]


def not_at_home(ctx, home):
    """True only if ``home`` says it has nothing of the VPS (an undo may then release its
    addresses); False if it has it or cannot be asked."""
    try:
        return not ctx.engine.status_at(ctx.ve.veid, home.migrate_address)["exists"]
    except (ResourceError, VEError):
        return False


RUNNERS = {"backup": backup, "restore": restore, "restore_files": restore_files}

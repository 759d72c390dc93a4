"""Runners: what each operation kind does through the engine on the node.

Every runner converges (running it again after an interruption finishes the
job) because the engine's verbs do: create with the same config is a no-op,
start of a running VE is a no-op, destroy of a missing VE is a no-op.
A runner returns the VE's new actual state.
"""

import logging

from ve import VEConfig, Limits
from ve.storage import recipes
from ve.errors import AlreadyExists, InvalidConfig, NeedsStop, NotFound, VEError

from hosting.core import audit
from hosting.environments import disk_room
from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
from hosting.ipam import services as ipam
from hosting.plans.models import Plan

from . import backup_runners, moving

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
BUILDABLE = set(recipes.BUILDABLE)  # templates a node builds itself when missing
DISK_KEYS = ("diskspace", "diskinodes")
IO_KEYS = ("ioweight", "readbps", "writebps", "readiops", "writeiops")
OLD_ROOT = "old-root"  # where a reinstall keeps the old files when asked to


class ForeignVE(AlreadyExists):
    """The VEID is taken on the node by a VE this dashboard did not make: never touch it."""


class DiskTooSmall(InvalidConfig):
    """The VE's data does not fit the disk of the plan it is moving to."""

    code = "disk-too-small"


def config_of(ve, template=None):
    """The engine's VEConfig for a dashboard VE: limits, addresses and name servers."""
    return VEConfig(veid=ve.veid, hostname=ve.hostname, template=template or ve.template.name,
                    limits=Limits(**ve.engine_limits()), ips=ve.engine_ips(),
                    nameservers=nameservers_of(ve), seccomp_allow=ve.engine_seccomp_allow(),
                    shared_template=ve.shared_template)


def nameservers_of(ve):
    servers = []
    for address in ve.addresses.select_related("pool"):
        servers += [s for s in address.pool.nameservers.split() if s not in servers]
    return tuple(servers)


def ensure_template(engine, name):
    if any(t.name == name for t in engine.template_list()):
        return
    if name not in BUILDABLE:
        raise NotFound(f"template {name} is not installed on this node")
    engine.template_build(name)


def install_logins(ctx):
    """Set the root password hash and SSH key from the operation's params."""
    params = ctx.op.params
    if params.get("password_hash"):
        ctx.engine.set_password_hash(ctx.ve.veid, "root", params["password_hash"])
    if params.get("ssh_key"):
        ctx.engine.add_ssh_key(ctx.ve.veid, params["ssh_key"])


def _refuse_foreign(ctx, cfg):
    """A VE with this VEID here that no earlier attempt of this create made is not ours
    to move nor to hand out (the create's own check, for a VPS restored for another node)."""
    if not moving.on_this_node(ctx):
        return
    if ctx.op.attempts == 0 or ctx.engine.config(cfg.veid).hostname != cfg.hostname:
        raise ForeignVE(f"VEID {cfg.veid} is taken on this node by a VE the dashboard does "
                        "not manage; it was left alone", cfg.veid)


def create(ctx):
    """Make the VE (from its template, or with the disk of the backup in the params)."""
    cfg = config_of(ctx.ve)
    home = backup_runners.home_elsewhere(ctx)
    if home is not None and ctx.ve.node_id != home.pk:
        _refuse_foreign(ctx, cfg)
        backup_runners.create_and_send_home(ctx, cfg, home)  # goes on there, running
    if home is not None:  # at its home, moved here by the node that kept the backup
        if ctx.engine.status(cfg.veid).state != "running":  # a move cut off as it started it
            ctx.engine.start(cfg.veid)
        ctx.progress(85, "setting up root login")
        install_logins(ctx)
        return VE.State.RUNNING
    if ctx.op.params.get("backup"):
        def make(cfg):
            backup_runners.create_from_backup(ctx, cfg)
    else:
        ctx.progress(10, "preparing the OS template")
        ensure_template(ctx.engine, cfg.template)
        ctx.progress(30, "creating the file system")
        make = ctx.engine.create
    try:
        make(cfg)
    except AlreadyExists:
        existing = ctx.engine.config(cfg.veid)
        if ctx.op.attempts == 0 or existing.hostname != cfg.hostname:
            raise ForeignVE(f"VEID {cfg.veid} is taken on this node by a VE the dashboard "
                            "does not manage; it was left alone", cfg.veid) from None
        # Our own interrupted attempt, made with other settings: start over.
        ctx.engine.destroy(cfg.veid, timeout=STOP_TIMEOUT)
        make(cfg)
    ctx.progress(70, "starting")
    ctx.engine.start(cfg.veid)
    ctx.progress(85, "setting up root login")
    install_logins(ctx)
    return VE.State.RUNNING


def undo_create(ctx, error=None):
    """A create that failed leaves nothing: no files, no cgroup, no addresses.

    A VE that was on the node before this create (ForeignVE) is not ours to remove.
    A VPS restored here for another node, on a retry, may run there already (a move
    whose end was not recorded; a failed move of this attempt leaves it here, the
    engine's promise): unless that node says it has nothing of it, nothing is released
    and its state is unknown, for staff (its addresses never go to another VPS).
    """
    foreign = isinstance(error, ForeignVE) or ctx.op.params.get("foreign")
    home = backup_runners.home_elsewhere(ctx)
    if not foreign and home is not None and ctx.ve.node_id != home.pk \
            and ctx.op.attempts > 0 and not backup_runners.not_at_home(ctx, home):
        log.error("VE %s: its create failed, and node %s may run it: left for staff",
                  ctx.ve.veid, home.name)
        return VE.State.UNKNOWN
    if not foreign:
        ctx.engine.destroy(ctx.ve.veid, timeout=STOP_TIMEOUT)
    return destroyed(ctx)


def start(ctx):
    apply_pending_disk(ctx)
    ctx.progress(30, "starting")
    ctx.engine.start(ctx.ve.veid)
    return VE.State.RUNNING


def stop(ctx):
    ctx.progress(30, "shutting down")
    ctx.engine.stop(ctx.ve.veid, timeout=STOP_TIMEOUT)
    return VE.State.STOPPED


def restart(ctx):
    ctx.progress(30, "rebooting")
    apply_pending_disk(ctx)  # stops it first if a disk change waited for a reboot
    ctx.engine.restart(ctx.ve.veid, timeout=STOP_TIMEOUT)
    return VE.State.RUNNING


def reinstall(ctx):
    """A fresh root from the template; addresses, limits and name stay (engine reinstall)."""
    name = ctx.op.params.get("template") or ctx.ve.template.name
    template = OSTemplate.objects.get(name=name)
    ctx.progress(10, "preparing the OS template")
    ensure_template(ctx.engine, name)
    if not moving.on_this_node(ctx):  # lost on the node: make it anew
        ctx.progress(40, "installing " + template.name)
        ctx.engine.create(config_of(ctx.ve, template=name))
    else:
        ctx.progress(40, "installing " + template.name)
        ctx.engine.stop(ctx.ve.veid, timeout=STOP_TIMEOUT)
        apply_pending_disk(ctx)
        keep = OLD_ROOT if ctx.op.params.get("keep_old") else None
        # The operation id makes a redelivered or retried reinstall a no-op.
        ctx.engine.reinstall(ctx.ve.veid, template=name, keep_old_as=keep,
                             timeout=STOP_TIMEOUT, token=f"op-{ctx.op.pk}")
    ctx.ve.template = template
    ctx.ve.save(update_fields=["template"])
    ctx.progress(80, "starting")
    ctx.engine.start(ctx.ve.veid)
    install_logins(ctx)
    return VE.State.RUNNING


def password(ctx):
    ctx.progress(50, "setting the root password")
    install_logins(ctx)
    return None


def set_limits(ctx, disk_must_fit=False):
    """Bring limits, addresses and name servers on the node in line with the dashboard.

    Addresses in the operation's "release" list are dropped on the node first
    and only then given back to their pool. ``disk_must_fit``: a disk the
    data does not fit raises DiskTooSmall instead of staying as it was. A new
    seccomp relaxation is saved on the node; a running VE gets it at its next
    start, or now if the operation's params ask for a reboot.
    """
    ctx.progress(50, "applying limits and addresses")
    release = set(ctx.op.params.get("release", ()))
    want, have = config_of(ctx.ve), ctx.engine.config(ctx.ve.veid)
    ips = [ip for ip in want.ips if ip not in release]
    limits = ctx.ve.engine_limits()
    disk = {key: limits.pop(key) for key in DISK_KEYS}
    io = {key: limits.pop(key) for key in IO_KEYS}
    ctx.engine.set(ctx.ve.veid, ipadd=[ip for ip in ips if ip not in have.ips],
                   ipdel=[ip for ip in have.ips if ip not in ips],
                   nameservers=want.nameservers, seccomp_allow=want.seccomp_allow, **limits)
    # Disk and I/O apply where the node can; what cannot does not hold up the rest.
    for note in (_try_set(ctx, disk, "disk", disk_must_fit),
                 _try_set(ctx, io, "disk I/O limits")):
        if note:
            ctx.note(note)
    if release:
        ctx.ve.addresses.filter(address__in=release).delete()
    changed = want.seccomp_allow != have.seccomp_allow
    if changed or ctx.op.params.get("reboot"):
        return _seccomp_applies(ctx)
    return None


def _seccomp_applies(ctx):
    """The VE's init installed the filter it started with: a running VE needs a reboot.

    A reboot asked for is made even if the node already had the value: an
    earlier change may have been saved without one.
    """
    if ctx.engine.status(ctx.ve.veid).state != "running":
        return None
    if not ctx.op.params.get("reboot"):
        # Worded for the customer too, who sees this operation but never the setting.
        ctx.note("the change takes effect at the next reboot")
        return None
    return restart(ctx)  # a pending smaller disk is applied on the way, as any reboot does


def suspend(ctx):
    ctx.progress(30, "stopping")
    ctx.engine.stop(ctx.ve.veid, timeout=STOP_TIMEOUT)
    return VE.State.SUSPENDED


def hibernate(ctx):
    """Save the VE's memory to disk and stop it (OpenVZ's suspend); Start resumes it.
    What CRIU cannot save (a namespace the customer made, say) refuses it, and the
    VE runs on untouched."""
    ctx.progress(30, "saving its memory to disk")
    ctx.engine.hibernate(ctx.ve.veid)
    return VE.State.HIBERNATED


def snapshot(ctx):
    """Take the snapshot named in the params (a retry finds its own, taken already)."""
    name = ctx.op.params["name"]
    ctx.progress(30, "taking the snapshot")
    try:
        ctx.engine.snapshot(ctx.ve.veid, name)
    except AlreadyExists:
        if ctx.op.attempts == 0:
            raise  # a snapshot of that name the dashboard did not know: left alone
    _record_snapshots(ctx)
    return None


def rollback(ctx):
    """Put the disk back as the snapshot left it; a running VE reboots on the way."""
    ctx.progress(30, "rolling back the disk")
    done = ctx.engine.rollback(ctx.ve.veid, ctx.op.params["name"])
    _record_snapshots(ctx)
    return VE.State.RUNNING if done["restarted"] else None


def snapshot_delete(ctx):
    ctx.progress(30, "deleting the snapshot")
    try:
        ctx.engine.snapshot_delete(ctx.ve.veid, ctx.op.params["name"])
    except NotFound:
        pass  # gone already (a retry)
    _record_snapshots(ctx)
    return None


def _record_snapshots(ctx):
    from hosting.environments import snapshots
    snapshots.record(ctx.ve, ctx.engine.snapshots(ctx.ve.veid))


def resume(ctx):
    apply_pending_disk(ctx)
    ctx.progress(30, "starting")
    ctx.engine.start(ctx.ve.veid)
    return VE.State.RUNNING


def destroy(ctx):
    ctx.progress(30, "removing the VPS")
    ctx.engine.destroy(ctx.ve.veid, timeout=STOP_TIMEOUT)
    return destroyed(ctx)


def destroyed(ctx):
    """Book-keeping once the node holds nothing of the VE any more."""
    ipam.release(ctx.ve)
    ctx.ve.snapshots.all().delete()  # they went with its files (its backups stay)
    return VE.State.DESTROYED


def _try_set(ctx, values, what, must_fit=False):
    """Set ``values`` on the node; return a note for the customer if it cannot be now.

    ``must_fit``: the engine refusing the values (a disk smaller than the data)
    raises DiskTooSmall instead.
    """
    try:
        ctx.engine.set(ctx.ve.veid, **values)
    except NeedsStop:
        return f"the {what} changes at the next reboot"
    except InvalidConfig as exc:
        if must_fit:
            raise DiskTooSmall(exc.message, ctx.ve.veid) from exc
        return f"the {what} stays as it was: {exc.message}"
    except VEError as exc:  # e.g. no I/O weight here
        return f"the {what} stays as it was: {exc.message}"
    return ""


def change_plan(ctx):
    """Move the VE to the plan the dashboard gave it (params: "plan" and "from", names and ids).

    The data must fit the new disk: checked again here with the node's own
    figures (DiskTooSmall otherwise; the undo puts the old plan back). The rest
    applies live; a smaller disk of a running VE waits for its next stop.
    """
    ctx.progress(20, "checking the disk")
    _check_disk_room(ctx)
    ctx.progress(40, "applying plan " + ctx.ve.plan.name)
    return set_limits(ctx, disk_must_fit=True)


def _check_disk_room(ctx):
    want = Limits(**ctx.ve.engine_limits())
    have = ctx.engine.config(ctx.ve.veid).limits
    if want.diskspace >= have.diskspace and want.diskinodes >= have.diskinodes:
        return  # nothing shrinks
    try:
        used = ctx.engine.disk_usage(ctx.ve.veid)
    except VEError as exc:  # unreadable now (a stopped VE's image): the engine checks again
        log.info("VE %s: disk usage unknown before a shrink (%s)", ctx.ve.veid, exc)
        return
    refusal = disk_room.refusal(used.space_used, used.inodes_used, want.diskspace,
                                want.diskinodes)
    if refusal:
        raise DiskTooSmall(f"plan {ctx.ve.plan.name} refused: {refusal}", ctx.ve.veid)


def undo_plan(ctx, error=None):
    """A plan change that failed leaves the VE on its old plan, in the database and on
    the node (what was applied already is put back; if that fails too, reconcile's
    drift check queues the old plan's limits)."""
    params = ctx.op.params
    old = Plan.objects.filter(pk=params.get("from_id")).first()
    if old is None:
        return None
    if VE.objects.filter(pk=ctx.ve.pk, plan_id=params.get("plan_id")).update(plan=old):
        audit.record(None, "ve.plan_reverted", ctx.ve, plan=old.name, refused=params.get("plan"),
                     operation=str(ctx.op.pk), error=str(error or "")[:200])
    ctx.ve.plan = old
    # The addresses the new plan brought go back to their pool (set_limits below
    # drops them on the node, as they are no longer the VE's).
    ctx.ve.addresses.filter(address__in=params.get("added", ())).delete()
    try:
        set_limits(ctx)
    except VEError as exc:
        log.warning("VE %s: old plan's limits not restored (%s); reconcile will", ctx.ve.veid, exc)
    return None


def apply_pending_disk(ctx):
    """Give a VE about to start the disk its plan sells, if a live change had to wait.

    If the disk cannot change (it holds more than the plan's size, say), the
    VE starts with the disk it has: it must never be kept from starting.
    """
    if not _disk_differs(ctx):
        return
    ctx.engine.stop(ctx.ve.veid, timeout=STOP_TIMEOUT)  # also clears a VE that halted itself
    ctx.progress(20, "resizing the disk")
    limits = ctx.ve.engine_limits()
    note = _try_set(ctx, {key: limits[key] for key in DISK_KEYS}, "disk")
    if note:
        ctx.note(note)


def _disk_differs(ctx):
    want = Limits(**ctx.ve.engine_limits())
    have = ctx.engine.config(ctx.ve.veid).limits
    return (want.diskspace, want.diskinodes) != (have.diskspace, have.diskinodes)




RUNNERS = {"create": create, "start": start, "stop": stop, "restart": restart,
           "reinstall": reinstall, "password": password, "set": set_limits,
           "plan": change_plan, "suspend": suspend, "resume": resume, "destroy": destroy,
           "migrate": moving.migrate, "hibernate": hibernate, "snapshot": snapshot,
           "rollback": rollback, "snapshot_delete": snapshot_delete,
           **backup_runners.RUNNERS}
UNDO = {"create": undo_create, "plan": undo_plan}

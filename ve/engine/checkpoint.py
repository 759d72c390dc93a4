"""Checkpoint and restore (CRIU): a running VE saved to disk and brought back.

``checkpoint`` saves the VE's processes (memory, files, sockets, TCP
connections included, namespaces) into VE_ROOT/dump/<veid>; with ``stop`` it
is OpenVZ's suspend to disk (``hibernate``): the VE then stops, and its next
start resumes it. ``restore`` brings a checkpoint back on a stopped VE with
the same PIDs inside, addresses and limits.

A dump that cannot succeed is refused before anything happens (the VE runs
on untouched): a process of the VE outside its init's tree (a `vectl exec`
session), in another time namespace, or in a namespace of its own that CRIU
cannot save (one its root made). A dump that fails anyway leaves the VE
running; the images of a failed one are not kept.

Known limit: the watcher's seccomp notifier (sysinfo answers, reboot
detection, docs/engine.md) cannot be saved; a restored VE runs with its
filter's notifications turned into "let through" until its next start: its
sysinfo(2) tells the host's figures (its /proc files, from LXCFS, still tell
its own). Its reboot and power-off are still told apart: the watcher runs
the restore and, as init's parent, learns how init ended.
"""

import json
import os
import time

# shutil, ve.paths, ve.watch and the kernel's criu and console modules are imported
# where a checkpoint or a restore uses them: every start of a VE (which looks for a
# hibernation image here) and every vectl call load this module.
from .. import net, state, validate
from ..errors import NotFound, ResourceError, StateError, Unsupported, host_errors
from ..kernel import netns, proc
from ..log import get as get_logger
from ..revert import Reverter
from .initguard import close_host_files, protect_init

log = get_logger(__name__)

META = "ve.json"  # the engine's record of a checkpoint, beside criu's images
# Namespaces CRIU saves only as the VE's own: one of them made inside the VE
# (unshare, a systemd unit's PrivateNetwork=) cannot be dumped.
NAMESPACE_KINDS = ("mnt", "net", "uts", "ipc", "pid", "pid_for_children", "user", "cgroup",
                   "time", "time_for_children")


class CheckpointMixin:
    """checkpoint, restore and the hibernation image of the Engine."""

    def checkpoint(self, veid, stop=False):
        """Save the running VE's processes to disk; with ``stop`` it then stops
        (hibernation: its next start resumes it). Return a dict of figures."""
        veid = validate.veid(veid)
        with self._lock(veid):
            return self._checkpoint(veid, stop)

    def _checkpoint(self, veid, stop, dumping=None):
        """``checkpoint`` under the VE's lock, held by the caller. ``dumping(path)``,
        if given, is called with the directory criu is about to write the images in."""
        import shutil
        from .. import paths
        from ..kernel import criu
        cfg = self._read_config(veid)
        record = self._running_init(veid)
        if record is None:
            raise StateError("the VE is not running", veid)
        refusal = undumpable(self.cgroups.pids(str(veid)), record.pid, record.console)
        if refusal:
            raise Unsupported(f"cannot checkpoint: {refusal}; the VE runs on", veid)
        images = self.layout.dump(veid)
        staging = images.with_name(f"{veid}.new")
        _fresh_dir(staging)
        if dumping:
            dumping(staging)
        if stop:
            self._net_save_counters(cfg)  # the link goes with the dumped VE
        try:
            console = criu.console_id(record.pid) if record.console else None
            timing = criu.dump(paths.criu_binary(), record.pid, staging,
                               leave_running=not stop, console=console)
        except criu.CriuFailed as exc:
            _keep_log(staging, images.with_name(f"{veid}.dump.log"))
            shutil.rmtree(staging, ignore_errors=True)
            alive = self._running_init(veid) is not None
            raise ResourceError(f"checkpoint failed: {exc.cause}; "
                                f"{'the VE runs on' if alive else 'the VE stopped'}",
                                veid) from exc
        if record.watched:
            _notifications_let_through(staging)
        _write_meta(staging, {"veid": veid, "stopped": stop, "time": time.time(),
                              "ips": list(cfg.ips), "netmode": cfg.netmode, "console": console,
                              "subgroups": self.cgroups.subgroups(str(veid))})
        with host_errors(veid, "cannot keep the checkpoint"):
            shutil.rmtree(images, ignore_errors=True)
            os.rename(staging, images)
        if stop:
            self._stop(veid, 0, fast=True)  # what the dumped VE left on the host
        log.info("VE %s checkpointed%s in %.2f s (frozen %s ms)", veid,
                 " and stopped" if stop else "", timing.seconds, timing.frozen_ms)
        return {"seconds": round(timing.seconds, 3), "frozen_ms": timing.frozen_ms,
                "stopped": stop, "bytes": _size(images)}

    def hibernate(self, veid):
        """OpenVZ's suspend: checkpoint to disk and stop; ``start``/``resume`` bring it back."""
        return self.checkpoint(veid, stop=True)

    def restore(self, veid):
        """Bring the VE's checkpoint back (the VE must be stopped); return init's host PID.

        The checkpoint is used up: the restored VE's disk moves on from it.
        On failure the VE stays stopped and the checkpoint is kept.
        """
        veid = validate.veid(veid)
        with self._lock(veid):
            cfg = self._read_config(veid)
            if self._running_init(veid) is not None:
                raise StateError("the VE is running: stop it to restore its checkpoint", veid)
            if self.checkpoint_info(veid) is None:
                raise NotFound("the VE has no checkpoint", veid)
            self._refuse_if_moving(veid)
            return self._restore(cfg)

    resume = restore

    def _discard_checkpoint(self, veid):
        """Forget the VE's checkpoint (its disk is about to move on without it)."""
        import shutil
        for path in (self.layout.dump(veid), self.layout.dump(veid).with_name(f"{veid}.new")):
            shutil.rmtree(path, ignore_errors=True)

    def _resume_or_none(self, cfg):
        """Resume a hibernated VE (its start does); None if it is not hibernated. A
        resume that fails sets the checkpoint aside (dump/<veid>.failed): it starts afresh."""
        if not self.hibernated(cfg.veid):
            return None
        try:
            return self._restore(cfg)
        except (ResourceError, OSError) as exc:
            import shutil
            aside = self.layout.dump(cfg.veid).with_name(f"{cfg.veid}.failed")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(self.layout.dump(cfg.veid), aside)
            log.warning("VE %s: cannot resume from hibernation (%s); it starts afresh, its "
                        "checkpoint kept in %s", cfg.veid, exc, aside)
            return None

    def checkpoint_info(self, veid):
        """The VE's checkpoint record ({"stopped", "time", ...}) or None."""
        try:
            with open(self.layout.dump(veid) / META) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def hibernated(self, veid):
        """True if the VE stopped into a checkpoint that its next start resumes."""
        info = self.checkpoint_info(veid)
        return bool(info and info.get("stopped"))

    def _restore(self, cfg):
        import shutil
        veid, name = cfg.veid, str(cfg.veid)
        images = self.layout.dump(veid)
        if state.read_init(self.layout.state(veid)) is not None:
            self._net_down(cfg)  # left by the run that was dumped, or a crash
            state.forget_init(self.layout.state(veid))
        started = time.monotonic()
        with Reverter() as undo:
            undo.add(self._disk_unmount, cfg)
            self._disk_mount(cfg)
            self._clear_cgroup(name)
            undo.add(self._clear_cgroup, name)  # also ends a half-restored tree
            try:
                self.cgroups.create(name, cfg.limits)  # criu (soft mode) keeps our limits
                self._hand_back_cgroup_tree(cfg)
            except OSError as exc:
                raise ResourceError(f"cgroup setup failed: {exc}", veid) from exc
            self._apply_io_limits(cfg)
            close_host_files()
            peer = None
            if net.has_network(cfg):
                undo.add(self._net_down, cfg)
                peer = self._net_pair_for_restore(cfg)
            console = (self.checkpoint_info(veid) or {}).get("console")
            pid, with_console = self._run_criu_restore(cfg, peer, console)
            protect_init(veid, pid)
            if peer:
                self._net_attach_restored(cfg)
            with host_errors(veid, "cannot record the running VE"):
                state.record_init(self.layout.state(veid), pid, netns.identity(), False,
                                  console=with_console)
            undo.add(state.forget_init, self.layout.state(veid))
            undo.commit()
        shutil.rmtree(images, ignore_errors=True)
        log.info("VE %s restored in %.2f s, init PID %s", veid, time.monotonic() - started, pid)
        return pid

    def _run_criu_restore(self, cfg, peer, console=None):
        """Restore the VE's processes; return (init's host PID, whether its console has a
        master held). The node watcher runs criu where one serves the node, to be the
        parent of the restored init (ve/watch/restores.py) and to hold the new console
        terminal's master; else criu runs here, init is nobody's child, and a VE that had
        a console gets a terminal nobody reads (its console is gone until a restart)."""
        from .. import paths, watch
        from ..kernel import console as terminal, criu
        veid = cfg.veid
        if watch.available(self.layout, self.cgroups.parent):
            try:
                return watch.restore(self.layout, veid, paths.criu_binary(), peer,
                                     netns.identity(), timeout=criu.TIMEOUT + 30,
                                     console=console, idmap_base=cfg.idmap_base)
            except watch.RestoreFailed as exc:
                raise ResourceError(f"restore failed: {exc}", veid) from exc
            except watch.WatcherGone as exc:
                log.warning("VE %s: restored without the watcher (%s): a reboot inside "
                            "will leave it stopped", veid, exc)
        pair = terminal.open_pair(cfg.idmap_base) if console else (None, None)
        try:
            return criu.restore(paths.criu_binary(), self.layout.dump(veid),
                                self.layout.private(veid), f"/{self.cgroups.parent}/{veid}",
                                veth_peer=peer,
                                console=(console, pair[1]) if console else None), False
        except criu.CriuFailed as exc:
            raise ResourceError(f"restore failed: {exc.cause}", veid) from exc
        finally:
            for fd in pair:
                if fd is not None:
                    os.close(fd)

    def _hand_back_cgroup_tree(self, cfg):
        """A VE whose init manages its cgroup2 tree (systemd) gets its group delegated
        again and every subgroup it had, empty ones included: systemd watches their
        files, and CRIU makes only the groups that hold processes."""
        meta = self.checkpoint_info(cfg.veid) or {}
        subgroups = meta.get("subgroups") or []
        if not (subgroups and cfg.idmap_base):
            return
        name = str(cfg.veid)
        self.cgroups.delegate(name, cfg.idmap_base)
        self.cgroups.remake_subgroups(name, subgroups, cfg.idmap_base)


def undumpable(pids, init, console=False):
    """Why the VE whose cgroup holds ``pids`` (init: host PID ``init``; ``console``: it
    has a console terminal) cannot be dumped, or None. Reads the host's /proc; a
    process that ends meanwhile is skipped."""
    mine = set(pids)
    try:
        spaces = {kind: os.readlink(f"/proc/{init}/ns/{kind}") for kind in NAMESPACE_KINDS}
        console_tty = os.stat(f"/proc/{init}/root/dev/console").st_rdev if console else None
    except OSError:
        return "its init ended"
    for pid in sorted(mine - {init}):
        try:
            name = proc.name(pid)
            if console_tty is not None and _console_login(pid, console_tty):
                return (f"someone is logged in on its console (process {pid}, {name}): "
                        "criu cannot save a login session on a console it does not own; "
                        "log out there first")
            if not _descends_from(pid, init):
                return (f"process {pid} ({name}) is not in its init's process tree "
                        "(a vectl exec or enter session still running?)")
            for kind, ident in list(spaces.items()):
                if os.readlink(f"/proc/{pid}/ns/{kind}") != ident:
                    return (f"process {pid} ({name}) has a {kind.split('_')[0]} namespace "
                            "of its own, which criu cannot save inside a VE")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return None


def _console_login(pid, console_tty):
    """True if ``pid``'s controlling terminal is the console and it has /dev/tty open
    (a login shell with job control does)."""
    with open(f"/proc/{pid}/stat") as f:
        tty_nr = int(f.read().rsplit(")", 1)[1].split()[4])
    if tty_nr != console_tty:
        return False
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/tty":
                return True
        except OSError:
            continue
    return False


def _descends_from(pid, ancestor):
    seen = 0
    while pid not in (ancestor, 0, 1) and seen < 4096:
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        seen += 1
    return pid == ancestor


def _fresh_dir(path):
    """The images' directory: others may search it (not list it): criu's restore looks
    for optional images as the VE's root (a missing one must be ENOENT, not EACCES);
    the images themselves are root's alone."""
    import shutil
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(mode=0o700)
    os.chmod(path, 0o711)


def _keep_log(images, target):
    import shutil
    from ..kernel import criu
    try:
        shutil.copyfile(images / criu.DUMP_LOG, target)
    except OSError:
        pass


def _write_meta(images, meta):
    with open(images / META, "w") as f:
        json.dump(meta, f)


def _size(path):
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _notifications_let_through(images):
    """Turn the seccomp filter's user notifications into "allow" in the saved images.

    A notifier's listener cannot be saved or made again for restored processes;
    without one the kernel fails a notified call with ENOSYS (sysinfo would fail).
    The filter is saved as BPF: every ``ret #SECCOMP_RET_USER_NOTIF`` is one
    8-byte instruction (code BPF_RET|BPF_K, jt 0, jf 0, k), changed in place.
    """
    from ..kernel import seccomp
    path = images / "seccomp.img"
    if not path.exists():
        return
    ret_k = (0x06).to_bytes(2, "little") + b"\0\0"
    raw = path.read_bytes()
    patched = raw.replace(ret_k + seccomp.RET_USER_NOTIF.to_bytes(4, "little"),
                          ret_k + seccomp.RET_ALLOW.to_bytes(4, "little"))
    if patched != raw:
        path.write_bytes(patched)

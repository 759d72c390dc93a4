"""Orchestration: one short method per verb, each converging on a target state.

Every verb that changes a VE holds that VE's lock (shared with every other
process on the node that uses the engine) and undoes its completed steps
when a later one fails, so a failure leaves the VE as it was.
"""

import contextlib
import os
import signal
import time

from .. import cgroups, config as conf, net, state, syscalls, validate
from ..errors import AlreadyExists, ResourceError, StateError, VEError, host_errors
from .accounts import AccountsMixin
from .backups import BackupMixin
from .boot import BootMixin
from .checkpoint import CheckpointMixin
from .initguard import close_host_files, protect_init
from .migration import MigrateMixin
from .disk import DiskMixin, io_values
from .exits import ExitMixin
from .inside import InsideMixin
from .network import NetMixin, net_files
from .sampling import SamplingMixin
from .query import QueryMixin
from .reinstall import ReinstallMixin
from .shell import EXEC_ENV, ShellMixin
from .snapshots import SnapshotMixin
from .timeouts import LOCK_TIMEOUT, STOP_TIMEOUT
from ..cgroups.fs import poll
from ..kernel import netns, proc, ucounts
from ..paths import Layout, default_root
from ..revert import Reverter
from ..storage import templates  # the light half: lookups; build and unpack load on use
from ..log import get as get_logger

log = get_logger(__name__)

# MEMORY_PRESSURE_WATCH: a systemd init would watch memory pressure through a PSI
# trigger, which a restore loses (it then spins: see ve/storage/debian.py); other
# inits ignore it.
INIT_ENV = EXEC_ENV + ("TERM=linux", "MEMORY_PRESSURE_WATCH=/dev/null")


class Engine(QueryMixin, ShellMixin, InsideMixin, AccountsMixin, NetMixin, DiskMixin,
             SamplingMixin, ExitMixin, ReinstallMixin, BootMixin, CheckpointMixin,
             MigrateMixin, SnapshotMixin, BackupMixin):
    """The node's container engine: VEs under one VE_ROOT and one cgroup parent."""

    def __init__(self, root=None, cgroup_parent=None):
        self.layout = Layout(root or default_root())
        parent = cgroup_parent or os.environ.get("VE_CGROUP_PARENT") or "ve"
        self.cgroups = cgroups.driver(parent=parent)

    # -- templates ---------------------------------------------------------

    def template_build(self, name):
        """Build OS template ``name`` into the template cache; return its path."""
        validate.template_name(name)
        self.layout.ensure()
        from ..storage import recipes
        return recipes.build(self.layout.cache_dir, name)

    def template_import(self, name, tarball, **meta):
        """Install a rootfs tarball as template ``name`` after validating every entry.

        ``meta``: distribution, version, init (argv), stop_signal, arch, services.
        """
        self.layout.ensure()
        return templates.import_tarball(self.layout.cache_dir, validate.template_name(name),
                                        tarball, **meta)

    def template_list(self):
        """Return the metadata of every installed template."""
        return templates.list_templates(self.layout.cache_dir)

    # -- lifecycle ---------------------------------------------------------

    def create(self, cfg):
        """Create the VE described by ``cfg`` (a VEConfig); the same config again is a no-op."""
        self.layout.ensure()
        tarball = templates.cache_path(self.layout.cache_dir, cfg.template)
        cfg = self._resolve_layout(cfg)
        with self._lock(cfg.veid):
            existing = self._read_config(cfg.veid, missing_ok=True)
            if existing == cfg:
                return cfg
            if existing is not None:
                raise AlreadyExists("a VE with this VEID already exists", cfg.veid)
            self._check_ips_free(cfg)
            self._remove_files(cfg.veid)  # leftovers of a create that crashed
            with Reverter() as undo:
                undo.add(self._remove_files, cfg.veid)
                self._disk_create(cfg, tarball)
                with host_errors(cfg.veid, "cannot write the VE's files"):
                    self.layout.mountpoint(cfg.veid).mkdir(mode=0o700)
                    conf.write(self.layout.conf(cfg.veid), cfg)
                undo.commit()
        return cfg

    def start(self, veid):
        """Start the VE; starting a running VE is a no-op. Return its init PID."""
        veid = validate.veid(veid)
        with self._lock(veid):
            cfg = self._read_config(veid)
            self._refuse_if_moving(veid)
            return self._start(cfg)

    def stop(self, veid, timeout=STOP_TIMEOUT, fast=False):
        """Stop the VE: ask its init to shut down, kill what is left after ``timeout`` s.

        ``fast`` kills at once (vzctl's ``stop --fast``). A stopped VE is a no-op.
        """
        veid = validate.veid(veid)
        with self._lock(veid):
            self._read_config(veid)
            self._stop(veid, timeout, fast)

    def restart(self, veid, timeout=STOP_TIMEOUT):
        """Stop (if running) and start the VE under one lock; return the new init PID."""
        veid = validate.veid(veid)
        with self._lock(veid):
            cfg = self._read_config(veid)
            self._stop(veid, timeout, fast=False)
            return self._start(cfg)

    def destroy(self, veid, timeout=STOP_TIMEOUT):
        """Stop the VE and remove all its files; a missing VE is a no-op."""
        veid = validate.veid(veid)
        with self._lock(veid):
            self._destroy(veid, timeout)

    def _destroy(self, veid, timeout):
        self._stop(veid, timeout, fast=True)
        self._net_forget(veid)  # before the record of where it is goes
        with host_errors(veid, "cannot remove the VE's files"):
            self._remove_files(veid)
            state.forget_init(self.layout.state(veid))

    def set(self, veid, hostname=None, ipadd=(), ipdel=(), nameservers=None, netmode=None,
            bridge=None, onboot=None, bootorder=None, seccomp_allow=None, **limits):
        """Change host name, addresses, name servers, boot settings and/or limits; live if
        running, then saved.

        ``ipdel`` may contain "all". The network mode of a running VE cannot
        change. ``seccomp_allow`` (calls or groups, "none" for none) applies from
        the next start (and to new ``exec`` commands). If a live change fails, what
        was already changed is put back and the saved config stays as it was.
        """
        veid = validate.veid(veid)
        with self._lock(veid):
            old = self._read_config(veid)
            new = old.replace(limits=old.limits.replace(**limits),
                              hostname=hostname or old.hostname,
                              ips=_changed_ips(old.ips, ipadd, ipdel),
                              nameservers=old.nameservers if nameservers is None else nameservers,
                              netmode=netmode or old.netmode,
                              bridge=old.bridge if bridge is None else bridge,
                              onboot=old.onboot if onboot is None else onboot,
                              bootorder=old.bootorder if bootorder is None else bootorder,
                              seccomp_allow=(old.seccomp_allow if seccomp_allow is None
                                             else seccomp_allow))
            self._check_ips_free(new)
            record = self._running_init(veid)
            if record and (new.netmode, new.bridge) != (old.netmode, old.bridge):
                raise StateError("stop the VE to change its network mode or bridge", veid)
            io_changed = io_values(old.limits) != io_values(new.limits)
            with Reverter() as undo:
                if record and new.limits != old.limits:
                    undo.add(self._apply_limits, veid, old.limits)
                    self._apply_limits(veid, new.limits)
                if record and io_changed:
                    undo.add(self._apply_io_limits, old, new.limits)
                    self._apply_io_limits(new, before=old.limits)
                if record and new.hostname != old.hostname:
                    self._set_hostname(veid, record, new)
                    undo.add(self._set_hostname, veid, record, old)
                if record and _net_differs(old, new):
                    undo.add(self._net_change, new, old)
                    self._net_change(old, new)
                self._disk_change(old, new, running=bool(record))  # last: a grow stays
                conf.write(self.layout.conf(veid), new)
                undo.commit()
            if not record and net.kept_on_host(old) - net.kept_on_host(new):
                self._net_forget(veid)  # the next start makes what it still needs
            return new

    # -- steps -------------------------------------------------------------

    def _start(self, cfg):
        record = self._running_init(cfg.veid)
        if record:
            return record.pid
        meta = templates.metadata(self.layout.cache_dir, cfg.template)
        if state.read_init(self.layout.state(cfg.veid)) is not None:
            # A run that ended on its own: what it left on the host side (in
            # the namespace it ran from) goes, and its run file with it.
            self._net_down(cfg)
            state.forget_init(self.layout.state(cfg.veid))
        resumed = self._resume_or_none(cfg)
        if resumed is not None:
            return resumed
        from .. import watch
        notify = watch.available(self.layout, self.cgroups.parent)
        if cfg.limits.numnetif and not notify:
            log.warning("VE %s: no node watcher serves this node: its cap of %s network "
                        "devices is not enforced", cfg.veid, cfg.limits.numnetif)
        try:
            pid = self._start_once(cfg, meta, notify)
        except watch.WatcherGone as exc:
            log.warning("VE %s: %s; it starts without the watcher's sysinfo answers "
                        "and reboot detection", cfg.veid, exc)
            pid = self._start_once(cfg, meta, notify=False)
        log.info("VE %s started, init PID %s", cfg.veid, pid)
        return pid

    def _start_once(self, cfg, meta, notify):
        """Start the VE, undoing every step if one fails; return init's PID.

        ``notify``: install the seccomp notifier and give its listener to the
        node watcher (WatcherGone, everything undone, if it does not take it).
        """
        name = str(cfg.veid)
        try:
            ucounts.raise_node_caps()  # VEs' inotify use counts against host root's
        except OSError as exc:
            raise ResourceError(f"cannot raise the node's inotify caps: {exc}", cfg.veid) \
                from exc
        with Reverter() as undo:
            undo.add(self._disk_unmount, cfg)
            self._disk_mount(cfg)
            if self._journal(cfg.veid).exists():  # a reinstall was interrupted
                from ..storage import reinstall as swap
                with host_errors(cfg.veid, "cannot finish an interrupted reinstall"):
                    swap.recover(self.layout.private(cfg.veid), self._journal(cfg.veid))
            self._clear_cgroup(name)
            undo.add(self._clear_cgroup, name)  # create() may fail half-way
            try:
                self.cgroups.create(name, cfg.limits)
                if meta.cgroup2 and cfg.idmap_base:
                    self.cgroups.delegate(name, cfg.idmap_base)
            except OSError as exc:
                raise ResourceError(f"cgroup setup failed: {exc}", cfg.veid) from exc
            self._apply_io_limits(cfg)
            close_host_files()  # what VE root reads if it unmounts a mask
            undo.add(self._net_down, cfg)
            net_ready = self._net_prepare(cfg)  # nft runs beside the spawn
            undo.add(self._net_abandon, net_ready)
            master, terminal = self._console_pair(cfg, notify)
            try:
                spawned = self._spawn(cfg, meta, notify, terminal)  # the cgroup undo ends it
            except BaseException:
                _close_fds(master)
                raise
            finally:
                _close_fds(terminal)  # the VE holds it now
            for warning in spawned.warnings:  # the VE's own doing (a read-only /etc, say)
                log.warning("VE %s starts, but %s", cfg.veid, warning)
            try:
                protect_init(cfg.veid, spawned.pid)
                self._net_up(cfg, spawned.pid, net_ready)
                with host_errors(cfg.veid, "cannot record the running VE"):
                    record = state.record_init(self.layout.state(cfg.veid), spawned.pid,
                                               netns.identity(), spawned.listener is not None,
                                               console=master is not None)
                undo.add(state.forget_init, self.layout.state(cfg.veid))
                if spawned.listener is not None:
                    from .. import watch
                    watch.adopt(self.layout, cfg.veid, record, spawned.listener, master)
            finally:
                _close_fds(spawned.listener, master)
            undo.commit()
        return spawned.pid

    def console(self, veid, rows=24, cols=80):
        """Attach to the running VE's console (``watch.console_client.ConsoleConnection``):
        its recent output first, then what comes. StateError if it is stopped or was
        started without a console."""
        from ..watch import console_client
        veid = validate.veid(veid)
        self._read_config(veid)  # NotFound for a VE that does not exist
        record = self._running_init(veid)
        if record is None:
            raise StateError("the VE is not running", veid)
        if not record.console:
            raise StateError("the VE was started without a console (a node watcher "
                             "gives it one at its next start, unless VE_CONSOLE=off)", veid)
        return console_client.connect(self.layout, veid, rows, cols)

    def _console_pair(self, cfg, notify):
        """(master, terminal) of the VE's console pty, or (None, None): a console needs
        the node watcher (it holds and drains the master) and VE_CONSOLE not "off"."""
        if not (notify and console_wanted()):
            return None, None
        from ..kernel import console
        try:
            return console.open_pair(cfg.idmap_base)
        except OSError as exc:
            raise ResourceError(f"cannot make the console terminal: {exc}", cfg.veid) from exc

    def _spawn(self, cfg, meta, notify, console=None):
        from ..kernel.spawn import InitSpec, spawn_init  # here: a stop never loads it
        spec = InitSpec(
            private=str(self.layout.private(cfg.veid)),
            mountpoint=str(self.layout.mountpoint(cfg.veid)),
            hostname=cfg.hostname, argv=tuple(meta.init), env=INIT_ENV,
            cgroup_files=tuple(self.cgroups.join_files(str(cfg.veid), cloned=True)),
            clone_into=self.cgroups.clone_target(str(cfg.veid)),
            idmap_base=cfg.idmap_base, idmap_size=conf.IDMAP_SIZE, notify=notify,
            lxcfs=self._lxcfs(), cgroup2=meta.cgroup2,
            seccomp_rules=syscalls.rules(cfg.seccomp_allow), console=console,
            files=net_files(cfg))
        try:
            return spawn_init(spec)
        except OSError as exc:
            raise ResourceError(f"start failed: {exc}", cfg.veid) from exc

    @staticmethod
    def _lxcfs():
        """The lxcfs directory VEs get their /proc view from, if an lxcfs serves it."""
        from ..kernel import lxcfs_mounts
        wanted = os.environ.get("VE_LXCFS", lxcfs_mounts.DEFAULT_DIR)
        return None if wanted == "off" else lxcfs_mounts.serving(wanted)

    def _stop(self, veid, timeout, fast, netns_fd=None):
        """``netns_fd``: the dead VE's network namespace, held by the caller (the
        watcher); it is drained like a running VE's (``_net_drain``)."""
        record = self._running_init(veid)
        cfg = self._read_config(veid, missing_ok=True)
        held = os.dup(netns_fd) if netns_fd is not None else None
        if record:
            # Counters first (the link dies with the VE's namespace); the network
            # stays up while init shuts down, so its services close their
            # connections instead of leaving clients hanging.
            self._net_save_counters(cfg)
            pidfd = proc.pidfd_for(record.pid, record.start_time)
            if pidfd is not None:
                try:
                    if held is None:
                        held = _open_netns(record.pid)
                    self._end_init(veid, record.pid, pidfd, timeout, fast)
                finally:
                    os.close(pidfd)
        # What a crashed start or the stop left on the host side. The link is
        # retired, not deleted, if the namespace is ours to let go (and let go
        # whatever happens: a long-lived caller would keep it, and the link).
        try:
            self._net_down(cfg, retire=held is not None)
        finally:
            if held is not None:
                self._net_drain(veid, held)  # takes the descriptor
        # Whatever is left (a helper, a process of a crashed start) goes too.
        self._clear_cgroup(str(veid))
        self._disk_unmount(cfg)
        state.forget_init(self.layout.state(veid))

    def _end_init(self, veid, pid, pidfd, timeout, fast):
        """Ask init to shut down (unless ``fast``), then SIGKILL it.

        Killing PID 1 makes the kernel kill its whole PID namespace, which is
        faster than freezing and killing the cgroup member by member.
        """
        if not fast:
            signum, deadline = self._stop_signal(veid), time.monotonic() + timeout
            _ask_to_stop(pid, pidfd, signum, deadline)
            if proc.wait_exit(pidfd, max(0.0, deadline - time.monotonic())):
                return
            log.warning("VE %s did not stop within %ss; killing it", veid, timeout)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return  # it exited on its own meanwhile
        proc.wait_exit(pidfd, 5.0)

    def _stop_signal(self, veid):
        """The template's clean-stop signal; SIGTERM if the template is gone or odd."""
        from ..storage.cache import signal_number
        try:
            meta = templates.metadata(self.layout.cache_dir, self._read_config(veid).template)
        except (VEError, OSError):
            return signal.SIGTERM
        return signal_number(meta.stop_signal) or signal.SIGTERM

    def _clear_cgroup(self, name):
        """Kill whatever runs in the VE's cgroup and remove the cgroup."""
        try:
            if self.cgroups.exists(name):
                self.cgroups.kill(name)
                self.cgroups.destroy(name)
        except OSError as exc:
            raise ResourceError(f"could not clean up cgroup: {exc}", int(name)) from exc

    def _apply_limits(self, veid, limits):
        try:
            self.cgroups.apply(str(veid), limits)
        except OSError as exc:
            raise ResourceError(f"could not apply limits: {exc}", veid) from exc

    def _set_hostname(self, veid, record, cfg):
        from ..kernel.attach import set_hostname
        pidfd = proc.pidfd_for(record.pid, record.start_time)
        if pidfd is None:
            raise StateError("the VE stopped while being changed", veid)
        try:
            set_hostname(pidfd, bool(cfg.idmap_base), cfg.hostname)
        except OSError as exc:
            raise ResourceError(str(exc), veid) from exc
        finally:
            os.close(pidfd)

    def _unpack(self, tarball, cfg, dest, into_empty=False):
        try:
            templates.unpack(tarball, dest, cfg.idmap_base, into_empty)
        except OSError as exc:
            raise ResourceError(f"cannot unpack template: {exc}", cfg.veid) from exc

    def _remove_files(self, veid):
        import shutil
        self._disk_remove(veid)  # first: rmtree must never walk into a mounted image
        # rmtree never follows symlinks out of the tree (it works on fds).
        for path in (self.layout.private(veid), self.layout.mountpoint(veid),
                     self.layout.upper(veid)):
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)
        self._discard_checkpoint(veid)
        shutil.rmtree(self.layout.snapshots(veid), ignore_errors=True)
        for path in (self.layout.conf(veid), self.layout.counters(veid),
                     self.layout.netif_record(veid), self.layout.host_side(veid),
                     self._journal(veid), self._journal(veid, done=True)):
            if path.exists():
                path.unlink()

    @contextlib.contextmanager
    def _lock(self, veid):
        self.layout.ensure()
        with state.locked(self.layout.lock(veid), veid, LOCK_TIMEOUT) as hold:
            try:
                yield
            finally:
                # No lock file may outlive its VE (destroy, failed create, typo).
                hold.remove = not self.layout.conf(veid).exists()


def _open_netns(pid):
    """The network namespace of a live init, held past its death (None if it is gone)."""
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _changed_ips(ips, add, delete):
    delete = set(validate.ip_address(ip) for ip in delete if ip != "all") \
        if "all" not in delete else set(ips)
    added = [validate.ip_address(ip) for ip in add]
    return tuple(ip for ip in ips if ip not in delete) + tuple(ip for ip in added if ip not in ips)


def _net_differs(old, new):
    return ((old.ips, old.nameservers, old.limits.rate, old.limits.numconn)
            != (new.ips, new.nameservers, new.limits.rate, new.limits.numconn)
            or (old.hostname != new.hostname and bool(new.ips)))


def console_wanted():
    """True unless VE_CONSOLE is "off": VEs started under a node watcher get a console
    terminal (``kernel/console.py``)."""
    return os.environ.get("VE_CONSOLE", "on") != "off"


HANDLER_WAIT = 0.2  # s a stop waits for init to show a handler before it signals anyway
HANDLER_LATE = 2.0  # s it watches for a handler that came too late for that signal


def _ask_to_stop(pid, pidfd, signum, deadline):
    """Send init its clean-stop signal so that a stop right after a start is not lost.

    An init of a PID namespace drops a signal from outside that it neither
    catches nor blocks: a systemd that has just been exec'd installs its handlers
    some milliseconds later. But the masks in /proc may show neither while init
    takes the signal all the same (busybox init: waiting 2 s for a handler that
    never shows made its stop take 4 s instead of 2). So: wait briefly for a
    handler, signal, and if none had shown, signal once more when one does.
    """
    def shows_handler():
        return proc.takes_signal(pid, signum)

    caught = poll(shows_handler, min(HANDLER_WAIT, max(0.0, deadline - time.monotonic())))
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return  # it ended meanwhile: the wait for its exit returns at once
    if caught:
        return
    late = min(deadline, time.monotonic() + HANDLER_LATE)
    while time.monotonic() < late:
        if proc.wait_exit(pidfd, 0.02):
            return  # it took the first one
        if shows_handler():
            with contextlib.suppress(ProcessLookupError):  # it may end meanwhile
                signal.pidfd_send_signal(pidfd, signum)
            return


def _close_fds(*fds):
    for fd in fds:
        if fd is not None:
            os.close(fd)

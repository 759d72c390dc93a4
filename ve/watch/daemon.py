"""The node watcher's loop (``vectl watch``): see the package docstring.

One thread polls everything that can happen: a VE's init ending (its
pidfd), a VE's seccomp notifications (sysinfo to answer, reboot to note), a
client on the watcher's socket (a starting VE handing over its notifier), a
change in the run directory (a VE started or stopped by anyone). Work that
may wait for a VE's lock (reaping and restarting a VE, starting onboot VEs)
runs in a small thread pool, so the loop keeps answering sysinfo meanwhile.
"""

import collections
import errno
import fcntl
import os
import select
import signal
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor

from .. import state
from ..errors import StateError, VEError
from ..kernel import proc
from ..log import get as get_logger
from . import LOCK_NAME, SOCKET_NAME, holder
from .answers import Answers
from .clients import ClientsMixin
from .consoles import ConsolesMixin
from .lxcfs import LxcfsSupervisor
from .netif import NetifGuard
from .notifications import NotificationsMixin
from .restores import RestoresMixin

log = get_logger(__name__)

RESCAN_EVERY = 30.0        # a full look at every run file, besides the ones on change
REAP_RETRY = 2.0           # a VE whose lock was busy is tried again after this
TICK = 0.5
LXCFS_EVERY = 5.0          # seconds between looks at LXCFS and the VEs' /proc views
HANDOVER_TIMEOUT = 15.0    # how long a new watcher waits for the old one to let go


class Watched:
    """A running VE as the watcher holds it: its init's record and pidfd."""

    def __init__(self, record, pidfd, netns_fd):
        self.record = record
        self.pidfd = pidfd
        self.netns_fd = netns_fd  # keeps the VE's network (and traffic counters) until reaped

    def same_init(self, record):
        return (record.pid, record.start_time) == (self.record.pid, self.record.start_time)

    def close(self):
        for fd in (self.pidfd, self.netns_fd):
            if fd is not None:
                os.close(fd)


class Watcher(ClientsMixin, ConsolesMixin, NotificationsMixin, RestoresMixin):
    """Watches every VE of ``engine``'s node until ``stop()`` or, with ``idle_exit``
    seconds, until no VE has run for that long."""

    def __init__(self, engine, idle_exit=None, onboot=False, workers=4):
        self.engine = engine
        self.layout = engine.layout
        self.idle_exit = idle_exit
        self.onboot = onboot
        self.poller = select.epoll()
        self.handlers = {}
        self.ves = {}
        self.listeners = {}
        self.consoles = {}
        self.console_server = None
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="ve-watch")
        self.busy = {}  # veid -> future of its reap
        self.retry = {}  # veid -> (record, monotonic time to try again)
        self.answers = Answers(engine)
        self.lxcfs = LxcfsSupervisor(self.layout)
        self.lxcfs_check = None  # the future of the check in the pool, if one runs
        self.next_lxcfs = 0.0
        self.run_mtime = None
        self.next_rescan = self.next_collect = 0.0
        self.collected = {}  # (pid, start time) -> (waitid status, when): orphans reaped
        self.idle_since = time.monotonic()
        self.stopping = self.everything = self.handed_over = False
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.loop_calls = collections.deque()  # (future, func, args) from other threads
        self.lock_fd = self.server = self.holder = self.netif = None

    # -- lifetime ----------------------------------------------------------

    def serve(self):
        """Run until stopped. A watcher already serving the node hands it over (its
        listeners included) and exits: a restarted or upgraded service loses nothing.
        StateError if it does not let go."""
        passed_on = holder.inherited()  # from a twin that outlived the last watcher
        orphaned = {veid for _, veid, _, kind in passed_on if kind == holder.LISTENER}
        self._take_node(passed_on)
        try:
            self._start_restorer()
            self._add(self.wake_r, lambda _: self._woken())
            self._add(self.server.fileno(), lambda _: self._accept())
            self._start_consoles()
            for fd, veid, init, kind in passed_on:
                if kind == holder.CONSOLE:
                    self._keep_console(veid, fd, init)
                else:
                    self._listen(veid, fd, init)
            self._start_holder()
            self.netif = NetifGuard(self.engine)
            self._unstick(orphaned)
            self._rescan(everything=True)
            if self.onboot:
                self.pool.submit(self._start_onboot)
            log.info("watching the VEs under %s", self.layout.root)
            while not self.stopping:
                for fd, events in self.poller.poll(TICK):
                    handler = self.handlers.get(fd)
                    if handler is not None:
                        handler(events)
                self._tick()
        finally:
            self._release()

    def stop(self, everything=False):
        """Make ``serve`` return (from any thread or a signal handler).

        While VEs hold notifiers, their twin carries on as the watcher (a VE
        whose listener closes loses its sysinfo answers and reboot detection
        for good); ``everything`` stops the twin too, whatever runs.
        """
        self.stopping = True
        self.everything = everything
        self._wake()

    def _take_node(self, passed_on):
        self.layout.ensure()
        self.lock_fd = os.open(self.layout.run_dir / LOCK_NAME,
                               os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not _try_flock(self.lock_fd):
            from . import take_over
            try:
                passed_on += take_over(self.layout)
            except OSError as exc:
                log.warning("the running watcher did not hand over: %s", exc)
            deadline = time.monotonic() + HANDOVER_TIMEOUT
            while not _try_flock(self.lock_fd):
                if time.monotonic() > deadline:
                    os.close(self.lock_fd)
                    self._pass_on(passed_on)
                    raise StateError(f"a watcher already serves {self.layout.root}")
                time.sleep(0.05)
        path = self.layout.run_dir / SOCKET_NAME
        try:
            os.unlink(path)  # left by a watcher that died: we hold the lock now
        except FileNotFoundError:
            pass
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.server.bind(str(path))
        os.chmod(path, 0o600)
        self.server.listen(64)
        self.server.setblocking(False)

    def _unstick(self, veids):
        """Wake the VEs' tasks a dead watcher left waiting on an answer it had taken.

        The kernel hands each notification to one reader once: one taken by a
        watcher that died before answering would wait forever. SIGSTOP then
        SIGCONT interrupts the wait; the call starts again and notifies anew.
        """
        for veid in veids:
            try:
                pids = self.engine.cgroups.pids(str(veid))
            except OSError:
                continue
            for pid in pids:
                if _waits_on_seccomp(pid):
                    log.info("VE %s: PID %s waited on the last watcher; asking again", veid, pid)
                    for signum in (signal.SIGSTOP, signal.SIGCONT):
                        try:
                            os.kill(pid, signum)
                        except ProcessLookupError:
                            break

    def _start_holder(self):
        env = {"VE_ROOT": str(self.layout.root), "VE_CGROUP_PARENT": self.engine.cgroups.parent}
        options = ("--idle-exit", str(self.idle_exit)) if self.idle_exit is not None else ()
        held = {fd: (lst.veid, lst.init, holder.LISTENER) for fd, lst in self.listeners.items()}
        held.update({kept.master: (veid, kept.init, holder.CONSOLE)
                     for veid, kept in self.consoles.items()})
        self.holder = holder.HolderLink(held, env, options)
        self._add(self.holder.sock.fileno(), lambda _: self._holder_gone())

    def _holder_gone(self):
        log.warning("the listener holder (PID %s) died; starting another", self.holder.pid)
        self._remove(self.holder.sock.fileno())
        self.holder.reap()
        self._start_holder()

    def _pass_on(self, passed_on):
        from . import adopt_fd
        for fd, veid, init, kind in passed_on:
            if kind == holder.CONSOLE:  # goes only with its VE's notifier: lost
                os.close(fd)
                continue
            try:
                adopt_fd(self.layout, veid, init, fd)
            except OSError as exc:
                log.error("VE %s: its notifier could not be passed on: %s", veid, exc)
            finally:
                os.close(fd)

    def _release(self):
        if self.holder is not None:
            self._remove(self.holder.sock.fileno())
            if self.everything or self.handed_over or not self.listeners:
                self.holder.quit()
            else:
                log.info("%s VEs hold notifiers: the twin goes on as the watcher",
                         len({listener.veid for listener in self.listeners.values()}))
        if self.netif is not None:
            self.netif.stop()
        self._stop_restorer()
        self._stop_consoles()
        self.pool.shutdown(wait=True)
        for watched in self.ves.values():
            watched.close()
        for listener in list(self.listeners.values()):
            os.close(listener.fd)
        if self.server is not None:
            try:
                os.unlink(self.layout.run_dir / SOCKET_NAME)
            except FileNotFoundError:
                pass
            self.server.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)

    # -- the loop ----------------------------------------------------------

    def _tick(self):
        now = time.monotonic()
        try:
            mtime = os.stat(self.layout.run_dir).st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self.run_mtime or now >= self.next_rescan:
            self.run_mtime = mtime
            self._rescan(everything=now >= self.next_rescan)
        for veid, (record, when) in list(self.retry.items()):
            if now >= when:
                del self.retry[veid]
                self._reap(veid, record, watched_end=True)
        if now >= self.next_collect:
            self.next_collect = now + TICK
            self._collect_orphans()
        self.answers.sample_loads()
        if now >= self.next_lxcfs and (self.lxcfs_check is None or self.lxcfs_check.done()):
            self.next_lxcfs = now + LXCFS_EVERY
            running = [(veid, w.record.pid) for veid, w in self.ves.items()]
            self.lxcfs_check = self.pool.submit(self._check_lxcfs, running)
        if self.ves or self.busy:
            self.idle_since = now
        elif self.idle_exit is not None and now - self.idle_since > self.idle_exit:
            log.info("no VE has run for %ss: the watcher exits", self.idle_exit)
            self.stopping = True

    def _rescan(self, everything=False):
        """Bring the watched set in line with the run files."""
        if everything:
            self.next_rescan = time.monotonic() + RESCAN_EVERY
        veids = set(self.layout.veids())
        for veid in list(self.ves):
            if veid not in veids:
                self._forget(veid)
        for veid in veids:
            if veid in self.busy or veid in self.retry:
                continue
            record = state.read_init(self.layout.state(veid))
            watched = self.ves.get(veid)
            if record is None:
                if watched is not None:
                    self._forget(veid)  # stopped by the host
                continue
            if watched is not None and watched.same_init(record):
                continue
            if watched is not None:
                self._forget(veid)  # restarted by the host: a new init
            if record.is_alive():
                self._watch(veid, record)
            else:  # it ended before we looked: seen only if we held its notifier
                # or are its parent
                seen = self._notified_by(veid, record) or \
                    self._exit_status(veid, record) is not None
                self._reap(veid, record, watched_end=seen)

    def _watch(self, veid, record):
        pidfd = proc.pidfd_for(record.pid, record.start_time)
        if pidfd is None:
            return self._reap(veid, record, watched_end=False)
        try:
            netns_fd = os.open(f"/proc/{record.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            netns_fd = None
        self.ves[veid] = Watched(record, pidfd, netns_fd)
        self._add(pidfd, lambda _: self._ended(veid))
        if netns_fd is not None:
            self.netif.watch(veid, record, netns_fd)
        return None

    def _notified_by(self, veid, record):
        init = (record.pid, record.start_time)
        return any(listener.veid == veid and listener.init == init
                   for listener in self.listeners.values())

    def _forget(self, veid):
        watched = self.ves.pop(veid, None)
        if watched is not None:
            self._drop_console(veid, (watched.record.pid, watched.record.start_time))
            self._remove(watched.pidfd)
            watched.close()
        self.netif.forget(veid)
        self.answers.forget(veid)

    def _ended(self, veid):
        watched = self.ves.get(veid)
        if watched is None:
            return
        record = watched.record
        self._drop_console(veid, (record.pid, record.start_time))
        self._remove(watched.pidfd)
        self._exit_status(veid, record, watched.pidfd)  # a VE we restored is our child
        os.close(watched.pidfd)
        watched.pidfd = None
        self.netif.forget(veid)  # its sockets would hold the namespace the stop drains
        # The VE's netns stays held until the reap has saved its traffic counters.
        self._reap(veid, record, watched_end=True, holding=watched)

    def _reap(self, veid, record, watched_end, holding=None):
        """Clean up after a VE whose init ended (in the pool: it waits for the VE's lock)."""
        def work():
            try:
                held = holding.netns_fd if holding is not None else None
                # Restarted by a child process: this one has threads running Python.
                return self.engine.reap(veid, record, watched_end=watched_end, netns_fd=held,
                                        restart_in_child=True)
            finally:
                if holding is not None and holding.netns_fd is not None:
                    os.close(holding.netns_fd)
                    holding.netns_fd = None

        def done(future):
            self.busy.pop(veid, None)
            error = future.exception()
            if isinstance(error, StateError):  # its lock is busy: an action runs on it
                self.retry[veid] = (record, time.monotonic() + REAP_RETRY)
            elif error is not None:
                log.error("cleaning up after VE %s failed: %s", veid, error)
            self.run_mtime = None  # look again: it may run anew
            self._wake()

        if holding is not None and self.ves.get(veid) is holding:
            del self.ves[veid]
        self.busy[veid] = future = self.pool.submit(work)
        future.add_done_callback(done)

    def _check_lxcfs(self, running):
        """Keep LXCFS serving and the running VEs' /proc views alive (in the pool:
        a hung lxcfs takes seconds to find out about)."""
        try:
            done = self.lxcfs.check(running)
        except Exception:  # one bad round must not end the rounds to come
            log.exception("the LXCFS check failed")
            return
        if done["lxcfs"] not in ("ok", "off") or done["rebound"] or done["unbound"] \
                or done["failed"]:
            log.warning("LXCFS %s; /proc views re-bound: %s, unbound: %s, failed: %s",
                        done["lxcfs"], done["rebound"], done["unbound"], done["failed"])

    def _start_onboot(self):
        """Start the VEs marked onboot, once per boot of the node (see Engine.boot)."""
        try:
            started = self.engine.boot()
            if started:
                log.info("started at boot: %s", ", ".join(map(str, started)))
        except VEError as exc:
            log.error("starting VEs at boot failed: %s", exc)
        self._wake()

    # -- epoll bookkeeping ---------------------------------------------------------

    def _add(self, fd, handler):
        self.handlers[fd] = handler
        self.poller.register(fd, select.EPOLLIN)

    def _remove(self, fd):
        if self.handlers.pop(fd, None) is not None:
            try:
                self.poller.unregister(fd)
            except (OSError, ValueError):
                pass

    def _in_loop(self, func, *args, timeout=10.0):
        """Run ``func(*args)`` in the loop's thread (from another thread) and return its
        result: the loop's sets and its epoll are that thread's alone."""
        future = Future()
        self.loop_calls.append((future, func, args))
        self._wake()
        return future.result(timeout)

    def _woken(self):
        _drain(self.wake_r)
        while self.loop_calls:
            future, func, args = self.loop_calls.popleft()
            try:
                future.set_result(func(*args))
            except Exception as exc:  # the caller's to report
                future.set_exception(exc)

    def _wake(self):
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass


def _waits_on_seccomp(pid):
    """True if a thread of ``pid`` sleeps in the kernel's seccomp user notification."""
    return any(wchan.startswith("seccomp_do_user_notif")
               for wchan in proc.task_files(pid, "wchan", 64))


def _try_flock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _drain(fd):
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
    except OSError as exc:
        if exc.errno != errno.EAGAIN:
            raise

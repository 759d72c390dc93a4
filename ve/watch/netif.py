"""The watcher's interface guard: every running VE held to its ``numnetif`` cap.

One thread of the node watcher (not one process per VE) owns a
``ve.net.netif.Monitor`` per running VE with a cap and polls them all: a
device over the cap is deleted as soon as its creation is announced. Deleting
takes rtnl, so it runs here and never in the watcher's loop, which must keep
answering the VEs' sysinfo(2).

- The cap is re-read whenever the VE's config file changes (``vectl set``
  applies within ``TICK``); 0 closes the VE's monitor.
- ``lo`` and the engine's ``eth0`` (found from the host side: the peer of
  ``veth<VEID>``) are never deleted, whatever the VE renamed them to.
- Deletions are counted per run of the VE in ``net/<VEID>.netif``, which the
  engine's samples report (``netif_refused``) and a new watcher carries on.
- A VE's monitor goes when the watcher forgets the VE (it stopped): its
  sockets would otherwise keep the VE's network namespace alive.
- The namespaces a VE makes inside its own count too (``ve.net.nested``
  finds them, every ``DISCOVER`` seconds): the cap is on their devices
  together, and each gets a monitor of its own, closed once the VE no longer
  holds the namespace (our sockets alone would keep it alive).
"""

import contextlib
import itertools
import os
import queue
import select
import threading
import time

from ..errors import VEError
from ..log import get as get_logger

log = get_logger(__name__)

TICK = 0.5
DISCOVER = 1.0  # seconds between two looks for a VE's nested namespaces
MAX_NESTED = 1024  # nested namespaces followed per VE: two sockets each
ROUNDS = 4  # rounds of events one VE gets before the others are looked at
STOP_TIMEOUT = 10.0


class Guarded:
    """One running VE as the guard holds it."""

    def __init__(self, veid, init, netns_fd):
        self.veid, self.init, self.netns_fd = veid, init, netns_fd
        self.monitor = None
        self.nested = {}  # inode -> Monitor of a namespace the VE made in its own
        self.foreign = set()  # inodes seen that are not the VE's (not opened again)
        self.clock = itertools.count(1)  # arrival numbers across all its namespaces
        self.userns = None  # the VE's user namespace (inode); None: not followed
        self.conf_seen = None
        self.refused = 0
        self.stuck = 0
        self.failed = False
        self.capped_nested = False

    def monitors(self):
        return [] if self.monitor is None else [self.monitor, *self.nested.values()]

    def close_monitors(self):
        for monitor in self.monitors():
            monitor.close()
        self.monitor = None
        self.nested = {}

    def close(self):
        self.close_monitors()
        if self.netns_fd is not None:
            os.close(self.netns_fd)
            self.netns_fd = None


class NetifGuard:
    """A thread holding the node's running VEs to their interface caps."""

    def __init__(self, engine):
        self.engine = engine
        self.layout = engine.layout
        self.commands = queue.SimpleQueue()
        self.guarded = {}
        self.owners = {}  # a monitor's fd -> the Guarded it belongs to
        self.next_discovery = 0.0
        self.poller = select.epoll()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(self.wake_r, select.EPOLLIN)
        self.thread = threading.Thread(target=self._run, name="ve-netif", daemon=True)
        self.thread.start()

    def watch(self, veid, record, netns_fd):
        """Guard running VE ``veid`` (init ``record``); ``netns_fd`` is duplicated."""
        self._send(("watch", veid, (record.pid, record.start_time), os.dup(netns_fd)))

    def forget(self, veid):
        """Stop guarding VE ``veid`` (it stopped) and let go of its namespace."""
        self._send(("forget", veid))

    def stop(self):
        """End the thread, closing every monitor."""
        self._send(("stop",))
        self.thread.join(STOP_TIMEOUT)
        if not self.thread.is_alive():  # else it still polls them: left to the exit
            self.poller.close()
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _send(self, command):
        if not self.thread.is_alive():  # stopped: nothing is guarded any more
            if command[0] == "watch":
                os.close(command[3])
            return
        self.commands.put(command)
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass  # a wake-up is pending already

    # -- the thread --------------------------------------------------------------

    def _run(self):
        try:
            while self._commands():
                try:
                    for fd, _ in self.poller.poll(TICK):
                        if fd == self.wake_r:
                            _drain(self.wake_r)
                        else:
                            self._serve(fd)
                    self._reread_caps()
                    self._catch_up()
                    self._discover_all()
                except Exception:  # one bad round must not end the guard of every VE
                    log.exception("the interface guard failed a round")
                    time.sleep(TICK)
        finally:
            for guarded in self.guarded.values():
                self._unregister(guarded)
                guarded.close()
            self.guarded.clear()

    def _commands(self):
        """Apply what the watcher asked; False once it asked to stop."""
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return True
            if command[0] == "stop":
                return False
            if command[0] == "watch":
                _, veid, init, fd = command
                self._drop(veid)
                self.guarded[veid] = Guarded(veid, init, fd)
                self._take_record(self.guarded[veid])
            else:
                self._drop(command[1])

    def _drop(self, veid):
        guarded = self.guarded.pop(veid, None)
        if guarded is not None:
            self._unregister(guarded)
            guarded.close()

    def _reread_caps(self):
        for guarded in list(self.guarded.values()):
            try:
                st = os.stat(self.layout.conf(guarded.veid))
            except OSError:
                continue  # destroyed: the watcher forgets it soon
            # The engine replaces the file (a new inode) on every write.
            if (st.st_ino, st.st_mtime_ns) != guarded.conf_seen:
                guarded.conf_seen = (st.st_ino, st.st_mtime_ns)
                self._apply_cap(guarded)

    def _apply_cap(self, guarded):
        try:
            cap = self.engine.config(guarded.veid).limits.numnetif
        except (VEError, OSError) as exc:  # destroyed meanwhile, or a bad file
            log.warning("VE %s: cannot read its interface cap: %s", guarded.veid, exc)
            return
        if not cap:
            self._unregister(guarded)
            guarded.close_monitors()
            return
        if guarded.monitor is None:
            self._open(guarded, cap)
        else:
            guarded.monitor.cap = cap
        if guarded.monitor is not None:
            self._enforce(guarded)

    def _open(self, guarded, cap):
        from ..net.netif import Monitor
        from ..net import nested
        keep = self.engine.ve_link_index(guarded.veid)
        try:
            guarded.monitor = Monitor(f"/proc/self/fd/{guarded.netns_fd}", cap,
                                      keep=() if keep is None else (keep,), clock=guarded.clock)
            guarded.userns = nested.userns_of(guarded.netns_fd)
        except OSError as exc:
            if not guarded.failed:  # once, not at every retry
                log.warning("VE %s: cannot watch its network devices: %s", guarded.veid, exc)
            guarded.failed = True
            guarded.conf_seen = None  # try again at the next tick
            guarded.close_monitors()
            return
        if guarded.userns == nested.inode_of("/proc/self/ns/user"):
            # A privileged VE: nothing tells the namespaces it makes from the host's.
            log.info("VE %s has no user namespace: its nested namespaces are not followed",
                     guarded.veid)
            guarded.userns = None
        self._register(guarded, guarded.monitor)
        self._discover(guarded)

    def _register(self, guarded, monitor):
        self.poller.register(monitor.fileno(), select.EPOLLIN)
        self.owners[monitor.fileno()] = guarded

    def _unregister(self, guarded, monitors=None):
        for monitor in guarded.monitors() if monitors is None else monitors:
            self.owners.pop(monitor.fileno(), None)
            try:
                self.poller.unregister(monitor.fileno())
            except (OSError, ValueError):
                pass

    # -- nested namespaces ---------------------------------------------------------

    def _discover_all(self):
        now = time.monotonic()
        if now < self.next_discovery:
            return
        self.next_discovery = now + DISCOVER
        for guarded in list(self.guarded.values()):
            self._discover(guarded)

    def _discover(self, guarded):
        """Follow the namespaces the VE holds now: a monitor for each new one,
        none any more for those it let go."""
        from ..net import nested
        if guarded.monitor is None or guarded.userns is None:
            return
        try:
            pids = self.engine.cgroups.pids(str(guarded.veid))
        except OSError:
            return  # stopping: the watcher forgets it soon
        found = nested.discover(pids)
        found.pop(os.fstat(guarded.netns_fd).st_ino, None)  # its own: the main monitor
        changed = False
        for inode in set(guarded.nested) - set(found):
            monitor = guarded.nested.pop(inode)
            self._unregister(guarded, [monitor])
            monitor.close()
            changed = True
        guarded.foreign &= set(found)
        for inode, source in found.items():
            if inode in guarded.nested or inode in guarded.foreign:
                continue
            if len(guarded.nested) >= MAX_NESTED:
                if not guarded.capped_nested:
                    log.warning("VE %s: more than %s nested network namespaces: "
                                "the rest are not followed", guarded.veid, MAX_NESTED)
                    guarded.capped_nested = True
                break
            monitor = self._open_nested(guarded, inode, source)
            if monitor is not None:
                guarded.nested[inode] = monitor
                self._register(guarded, monitor)
                changed = True
        if changed:  # a namespace found may be over the cap already; one gone, under
            self._enforce(guarded)

    def _open_nested(self, guarded, inode, source):
        from ..net import nested
        from ..net.netif import Monitor
        fd = nested.open_netns(source, inode)
        if fd is None:
            return None  # gone, or not what was named: looked at again next round
        try:
            if not nested.owned_by(fd, guarded.userns):
                guarded.foreign.add(inode)  # the host's, say, met on a way in
                return None
            return Monitor(f"/proc/self/fd/{fd}", guarded.monitor.cap, clock=guarded.clock)
        except OSError as exc:
            log.info("VE %s: cannot watch nested network namespace %s: %s",
                     guarded.veid, inode, exc)
            return None
        finally:
            os.close(fd)

    def _catch_up(self):
        """Go on with VEs still over their cap (a batch at a time, no event needed)."""
        from ..net import netif
        for guarded in list(self.guarded.values()):
            if guarded.monitor is not None and \
                    netif.excess_of(guarded.monitors(), guarded.monitor.cap):
                self._enforce(guarded)

    def _serve(self, fd):
        guarded = self.owners.get(fd)
        if guarded is not None:
            self._enforce(guarded)

    def _enforce(self, guarded):
        """Take in the link events of the VE's namespaces; over its cap, freeze the
        VE and delete the newest devices until it is back under, then thaw it.

        Deleting a bridge takes the kernel ~17 ms here, making one ~2.5 ms: a
        VE left running would out-create the deletions by far (docs/security.md).
        Frozen, it makes nothing meanwhile; so a flood advances only as fast
        as its devices are deleted, and its count stays at the cap. What is
        over the cap only in kept devices (the lo of many nested namespaces)
        is noted, not fought: deleting nothing, the VE would stay frozen.
        """
        from ..net import netif
        monitors, cap = guarded.monitors(), guarded.monitor.cap
        try:
            for monitor in monitors:
                for _ in range(ROUNDS):  # then the others' turn (epoll brings us back)
                    if not monitor.pump():
                        break
            if not netif.excess_of(monitors, cap):
                self._note_stuck(guarded, netif.over(monitors, cap))
                return
            self._record(guarded, frozen=True)  # a watcher killed meanwhile: the next thaws
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(self.engine.cgroups.frozen(str(guarded.veid)))
                except OSError as exc:  # stopping meanwhile: delete anyway, unfrozen
                    log.info("VE %s: cannot freeze it over its cap: %s", guarded.veid, exc)
                before = guarded.refused
                while True:
                    for monitor in monitors:
                        while monitor.pump():
                            pass  # frozen: only what was under way still arrives
                    if not netif.excess_of(monitors, cap):
                        break
                    self._count(guarded, netif.trim_all(monitors, cap))
            self._record(guarded)
            log.warning("VE %s: %s network devices over its cap of %s deleted (%s this run)",
                        guarded.veid, guarded.refused - before, cap, guarded.refused)
            self._note_stuck(guarded, netif.over(monitors, cap))
        except OSError as exc:
            log.warning("VE %s: holding it to its interface cap failed: %s", guarded.veid, exc)

    def _note_stuck(self, guarded, over):
        """Record how far kept devices alone hold the VE over its cap (0: not);
        logged once each time it comes about."""
        stuck = max(0, over)
        if stuck == guarded.stuck:
            return
        if stuck and not guarded.stuck:
            log.warning("VE %s: %s devices over its cap of %s are ones never deleted "
                        "(lo of its nested namespaces)", guarded.veid, stuck,
                        guarded.monitor.cap)
        guarded.stuck = stuck
        self._record(guarded)

    def _count(self, guarded, deleted):
        if deleted:  # recorded batch by batch: the samples see a long clean-up progress
            guarded.refused += deleted
            self._record(guarded)

    # -- the refusal record ------------------------------------------------------

    def _take_record(self, guarded):
        """Carry on a predecessor's count for this run; thaw the VE if it was killed
        while the VE was frozen (nobody else would)."""
        from ..net import netif
        saved = netif.read_record(self.layout.netif_record(guarded.veid), guarded.init)
        guarded.refused = saved.get("refused", 0)
        if saved.get("frozen"):
            log.warning("VE %s: the last watcher left it frozen; thawing it", guarded.veid)
            try:
                with self.engine.cgroups.frozen(str(guarded.veid)):
                    pass  # leaving it thaws
            except OSError as exc:
                log.error("VE %s: cannot thaw it: %s", guarded.veid, exc)
            self._record(guarded)

    def _record(self, guarded, frozen=False):
        from ..net import netif
        try:
            netif.write_record(self.layout.netif_record(guarded.veid), guarded.init,
                               guarded.refused, frozen, guarded.stuck)
        except OSError as exc:
            log.warning("VE %s: cannot record its refused devices: %s", guarded.veid, exc)


def _drain(fd):
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass

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
"""

import contextlib
import os
import queue
import select
import threading
import time

from ..errors import VEError
from ..log import get as get_logger

log = get_logger(__name__)

TICK = 0.5
ROUNDS = 4  # rounds of events one VE gets before the others are looked at
STOP_TIMEOUT = 10.0


class Guarded:
    """One running VE as the guard holds it."""

    def __init__(self, veid, init, netns_fd):
        self.veid, self.init, self.netns_fd = veid, init, netns_fd
        self.monitor = None
        self.conf_seen = None
        self.refused = 0
        self.failed = False

    def close(self):
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
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
            if guarded.monitor is not None:
                guarded.monitor.close()
                guarded.monitor = None
            return
        if guarded.monitor is None:
            self._open(guarded, cap)
        else:
            guarded.monitor.cap = cap
        if guarded.monitor is not None:
            self._enforce(guarded)

    def _open(self, guarded, cap):
        from ..net.netif import Monitor
        keep = self.engine.ve_link_index(guarded.veid)
        try:
            guarded.monitor = Monitor(f"/proc/self/fd/{guarded.netns_fd}", cap,
                                      keep=() if keep is None else (keep,))
        except OSError as exc:
            if not guarded.failed:  # once, not at every retry
                log.warning("VE %s: cannot watch its network devices: %s", guarded.veid, exc)
            guarded.failed = True
            guarded.conf_seen = None  # try again at the next tick
            return
        self.poller.register(guarded.monitor.fileno(), select.EPOLLIN)

    def _unregister(self, guarded):
        if guarded.monitor is not None:
            try:
                self.poller.unregister(guarded.monitor.fileno())
            except (OSError, ValueError):
                pass

    def _catch_up(self):
        """Go on with VEs still over their cap (a batch at a time, no event needed)."""
        for guarded in list(self.guarded.values()):
            if guarded.monitor is not None and guarded.monitor.excess():
                self._enforce(guarded)

    def _serve(self, fd):
        for guarded in self.guarded.values():
            if guarded.monitor is not None and guarded.monitor.fileno() == fd:
                self._enforce(guarded)
                return

    def _enforce(self, guarded):
        """Take in the VE's link events; over its cap, freeze the VE and delete the
        newest devices until it is back under, then thaw it.

        Deleting a bridge takes the kernel ~17 ms here, making one ~2.5 ms: a
        VE left running would out-create the deletions by far (docs/security.md).
        Frozen, it makes nothing meanwhile; so a flood advances only as fast
        as its devices are deleted, and its count stays at the cap.
        """
        monitor = guarded.monitor
        try:
            for _ in range(ROUNDS):  # then the other VEs' turn (epoll brings us back)
                if not monitor.pump():
                    break
            if not monitor.excess():
                return
            self._record(guarded, frozen=True)  # a watcher killed meanwhile: the next thaws
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(self.engine.cgroups.frozen(str(guarded.veid)))
                except OSError as exc:  # stopping meanwhile: delete anyway, unfrozen
                    log.info("VE %s: cannot freeze it over its cap: %s", guarded.veid, exc)
                before = guarded.refused
                while True:
                    while monitor.pump():
                        pass  # frozen: only what was under way still arrives
                    if not monitor.excess():
                        break
                    self._count(guarded, monitor.trim())
            self._record(guarded)
            log.warning("VE %s: %s network devices over its cap of %s deleted (%s this run)",
                        guarded.veid, guarded.refused - before, monitor.cap, guarded.refused)
        except OSError as exc:
            log.warning("VE %s: holding it to its interface cap failed: %s", guarded.veid, exc)

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
                               guarded.refused, frozen)
        except OSError as exc:
            log.warning("VE %s: cannot record its refused devices: %s", guarded.veid, exc)


def _drain(fd):
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass

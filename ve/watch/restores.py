"""The watcher restores VEs, so that a restored VE's init is its child.

A VE restored from a checkpoint has no seccomp notifier (a listener cannot be
saved), so its reboot(2) is not seen before the kernel kills its init. The
kernel still says why init ended, to its parent only: killed by SIGHUP after
a restart, by SIGINT after a power-off or halt. So the engine asks the watcher
to run criu (``op: restore``), which makes init the watcher's child
(--restore-sibling); when init ends the watcher collects that status, notes
it for ``Engine.reap`` and the VE reboots or stays off as it asked.

An engine that dies before it hears back (a move's receiver killed, say) never
records the VE as running, and the move may be rolled back at the source
meanwhile: the watcher then ends what it restored for it.

A watcher that is replaced (upgrade, crash) leaves its children to the host's
init: their next reboot is then "unknown" (the VE stays stopped) until they
are started anew.
"""

import json
import os
import re
import select
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from ..kernel import console as terminal, criu, netns, proc
from ..log import get as get_logger

log = get_logger(__name__)

PARALLEL = 4  # restores at once (a node receiving an evacuation restores several)
COLLECTED_KEPT = 2 * 30.0  # s an orphan's status is kept: two full rescans of the run files
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_TTY_ID = re.compile(r"tty\[[0-9a-f]{1,16}:[0-9a-f]{1,16}\]")


class RestoresMixin:
    """The restore half of the Watcher (needs ``engine``, ``layout``, ``ves``, ``collected``)."""

    restorer = None

    def _start_restorer(self):
        self.restorer = ThreadPoolExecutor(PARALLEL, thread_name_prefix="ve-restore")

    def _stop_restorer(self):
        if self.restorer is not None:
            self.restorer.shutdown(wait=True)

    def _take_restore(self, conn, request):
        """Run the restore asked on ``conn`` in the restorer's threads; it replies there."""
        conn.settimeout(None)
        self.idle_since = time.monotonic()  # a watcher about to exit idle waits on
        self.restorer.submit(self._restore_and_reply, conn, request)

    def _restore_and_reply(self, conn, request):
        with conn:
            try:
                reply = self._restore(request)
            except Exception as exc:  # the client must hear something
                log.exception("a restore for a client failed")
                reply = {"ok": False, "error": f"the watcher failed: {exc}"}
            try:
                if _hung_up(conn):
                    raise BrokenPipeError("it hung up")
                conn.send(json.dumps(reply).encode())
            except OSError as exc:
                self._unclaimed(request, reply, exc)

    def _unclaimed(self, request, reply, why):
        """The engine that asked is gone (killed mid-restore, say): nobody will record
        the VE as running, and its move may be rolled back at the source meanwhile.
        A VE restored for it is ended, so it never runs on two nodes."""
        pid = reply.get("pid")
        log.warning("VE %s: the client of the restore is gone (%s)%s", request.get("veid"),
                    why, f"; its restored init {pid} is killed" if pid else "")
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)  # a PID namespace's init: all of it ends
            except ProcessLookupError:
                pass

    def _restore(self, request):
        veid = int(request["veid"])
        binary, peer = str(request.get("criu")), request.get("veth_peer")
        if not os.path.isabs(binary):
            return {"ok": False, "error": f"bad criu path {binary!r}"}
        if peer is not None and not _IFNAME.fullmatch(str(peer)):
            return {"ok": False, "error": f"bad interface name {peer!r}"}
        if request.get("netns") != netns.identity():
            # the VE's veth end is in the client's namespace: criu must run there
            return {"ok": False, "elsewhere": True,
                    "error": "the watcher runs in another network namespace"}
        cgroup = f"/{self.engine.cgroups.parent}/{veid}"
        console = request.get("console")
        if console is not None and not _TTY_ID.fullmatch(str(console)):
            return {"ok": False, "error": f"bad console id {console!r}"}
        # A VE dumped with a console gets a new terminal, whose master we keep.
        master, tty = terminal.open_pair(int(request.get("idmap_base") or 0)) \
            if console else (None, None)
        try:
            pid = criu.restore(binary, self.layout.dump(veid),
                               self.layout.private(veid), cgroup, veth_peer=peer,
                               sibling=True, console=(console, tty) if console else None)
        except criu.CriuFailed as exc:  # a tree it forked and killed: the tick collects it
            if master is not None:
                os.close(master)
            return {"ok": False, "criu": True, "error": exc.cause}
        finally:
            if tty is not None:
                os.close(tty)
        kept = False
        if master is not None:
            # Kept by the loop's thread (it owns the consoles), before the engine hears back.
            try:
                self._in_loop(self._keep_console, veid, master, (pid, proc.start_time(pid)))
                kept = True
            except Exception as exc:  # the VE runs: only its console is lost
                log.error("VE %s: its restored console could not be kept: %s", veid, exc)
                os.close(master)
        return {"ok": True, "pid": pid, "console": kept}

    def _exit_status(self, veid, record, pidfd=None):
        """Collect VE ``veid``'s ended init (``record``; ``pidfd`` if held) if it is our
        child, and note how it ended for ``Engine.reap``; return the action or None."""
        status = self._collected_status(record)
        if status is None:
            status = self._wait_for(record, pidfd)
        if status is None:
            return None  # still running, or not ours: the host's init collects it
        from ..engine.exits import note_exit
        action = note_exit(self.layout, veid, record.pid, record.start_time, status)
        log.info("VE %s: its restored init %s ended (%s)", veid, record.pid, action)
        return action

    @staticmethod
    def _wait_for(record, pidfd=None):
        """waitid(2) on init ``record`` if it is our ended child; its status or None."""
        opened = pidfd is None
        if opened:
            try:
                pidfd = os.pidfd_open(record.pid)
            except OSError:
                return None
            if proc.start_time(record.pid) != record.start_time:  # not that process
                os.close(pidfd)
                return None
        try:
            return os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return None
        finally:
            if opened:
                os.close(pidfd)

    def _collected_status(self, record):
        """The status the orphan collector took from init ``record``, if it did."""
        kept = self.collected.pop((record.pid, record.start_time), None)
        return kept[0] if kept else None

    def _collect_orphans(self):
        """Reap ended children of ours that are not watched VEs' inits: restored inits
        of VEs stopped by the host, trees of failed restores. Only processes in
        another PID namespace (VE inits): our other children have their waiters.

        A VE we do not watch yet may be among them: its init died before the engine
        wrote its run file, or while an earlier reap of the VE kept us from looking.
        How each ended is kept a while for ``_exit_status``, so that such an end is
        still told (a crash) rather than lost (unknown)."""
        now = time.monotonic()
        for key, (_, when) in list(self.collected.items()):
            if now - when > COLLECTED_KEPT:
                del self.collected[key]
        watched = {w.record.pid for w in self.ves.values()}
        for pid in proc.children():
            if pid in watched or not _in_a_child_pid_namespace(pid):
                continue
            started = proc.start_time(pid)
            if proc.is_zombie(pid):
                try:
                    status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
                except ChildProcessError:
                    continue
                if status is not None:
                    self.collected[(pid, started)] = (status, now)


def _in_a_child_pid_namespace(pid):
    return len(proc.namespace_pids(pid)) > 1


def _hung_up(conn):
    """True if the client closed its end (it sends nothing after its request)."""
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


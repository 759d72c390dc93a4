"""VEs that ended on their own: clean up at once, restart a reboot, tell the dashboard.

A VE's init ends without the engine asking when the VE reboots or powers
off from inside, crashes, or the node rebooted under it. ``reap`` (called by
the node watcher, or by anyone who finds such a VE) cleans up what the run
left (host side of its network, cgroups, the mounted disk image, the run
file), starts it again if it asked for a reboot, and records an event:

- ``reboot``: reboot(2) from inside (noted by the watcher before the kernel
  killed init): the VE is started again, same config, limits and addresses;
- ``poweroff``: power-off or halt from inside: it stays stopped;
- ``crash``: init ended otherwise (killed, or exited) while the watcher
  watched it;
- ``oom``: a crash while the VE's memory cgroup had OOM kills this run: the
  OOM killer took init (its last choice, see ``INIT_OOM_SCORE_ADJ``) when
  nothing else was left to kill. The VE is started again, like a reboot:
  the memory that filled it (its tmpfs, say) went with the old run;
- ``unknown``: it ended while no watcher watched it (no notifier, or the
  watcher was away), so it cannot be told apart;
- ``node-reboot``: its run file is from an earlier boot of the node.

Events are JSON files in ``VE_ROOT/events`` (at most MAX_EVENTS, oldest
dropped first) until a consumer such as the dashboard's node worker has
recorded them and calls ``forget_event``.
"""

import json
import os
import signal
import time

from .. import state
from ..errors import VEError
from ..fsutil import atomic_write
from ..kernel import proc
from ..log import get as get_logger

log = get_logger(__name__)

REBOOT, POWEROFF, CRASH, UNKNOWN, NODE_REBOOT = "reboot", "poweroff", "crash", "unknown", \
    "node-reboot"
OOM = "oom"
RESTARTED = (REBOOT, OOM)  # ends after which the VE is started again at once
MAX_EVENTS = 1000
# reboot(2) commands (linux/reboot.h) and what they mean for a VE
HALT_ACTIONS = {0x01234567: REBOOT, 0xA1B2C3D4: REBOOT, 0x4321FEDC: POWEROFF,
                0xCDEF0123: POWEROFF}
# how the kernel ends a PID namespace's init after reboot(2) (kernel/pid_namespace.c)
EXIT_SIGNALS = {signal.SIGHUP: REBOOT, signal.SIGINT: POWEROFF}


def note_halt(layout, veid, pid, start_time, command):
    """Remember that init ``pid`` of VE ``veid`` is going down by reboot(2) ``command``.

    Called by the watcher before it lets the call run; a command that does
    not end the VE (Ctrl-Alt-Del settings) is ignored. Returns the action.
    """
    action = HALT_ACTIONS.get(command & 0xFFFFFFFF)
    if action is not None:
        _note(layout, veid, pid, start_time, action)
    return action


def note_exit(layout, veid, pid, start_time, status):
    """Remember how init ``pid`` of VE ``veid`` ended, from its parent's waitid(2)
    ``status`` (an ``os.waitid_result``); returns the action.

    The kernel ends a PID namespace's init that called reboot(2) as if killed by
    SIGHUP (restart) or SIGINT (power-off, halt): only init's parent sees it. The
    node watcher is the parent of the VEs it restored (their seccomp notifier
    did not survive the checkpoint). Anything else is a crash.
    """
    killed = status.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
    action = EXIT_SIGNALS.get(status.si_status, CRASH) if killed else CRASH
    _note(layout, veid, pid, start_time, action)
    return action


def _note(layout, veid, pid, start_time, action):
    record = {"pid": pid, "start_time": start_time, "action": action, "time": time.time()}
    atomic_write(_halt_path(layout, veid), json.dumps(record) + "\n", durable=False)


def _halt_path(layout, veid):
    return layout.run_dir / f"{veid}.halt"


class ExitMixin:
    """``reap`` and the event journal of the Engine."""

    def reap(self, veid, record, watched_end=False, netns_fd=None, restart_in_child=False):
        """Clean up after VE ``veid`` whose init ``record`` has ended; return its event.

        Returns None if the VE is not in that state any more (the host stopped
        or restarted it meanwhile). ``watched_end``: the caller saw the end
        happen (so an end without a noted reboot or power-off is a crash).
        ``netns_fd``: the VE's network namespace, which the caller held open
        (its devices are then removed without stalling the node, see ve/net/teardown).
        ``restart_in_child``: a VE to start again is started by a `vectl start` child
        process, after the lock is let go: a caller with other threads running Python
        must not fork (see ``BootMixin._start_in_children``).
        """
        with self._lock(veid):
            current = state.read_init(self.layout.state(veid))
            if current is None or (current.pid, current.start_time) != \
                    (record.pid, record.start_time) or current.is_alive():
                return None
            cfg = self._read_config(veid, missing_ok=True)
            reason = self._exit_reason(veid, current, watched_end)
            if reason == CRASH and self._oom_kills(veid):
                reason = OOM
            self._net_save_counters(cfg)  # the link lives while the watcher holds its netns
            self._stop(veid, 0, fast=True, netns_fd=netns_fd)  # host side, cgroups, disk, run
            _forget(_halt_path(self.layout, veid))
            new_pid, error = None, ""
            restart = reason in RESTARTED and cfg is not None
            if restart and not restart_in_child:
                try:
                    new_pid = self._start(cfg)
                except VEError as exc:
                    error = exc.message
                    log.warning("VE %s ended (%s) but could not start again: %s",
                                veid, reason, exc)
            if not (restart and restart_in_child):
                return self._record_event(veid, reason, current.pid, new_pid, error)
        if not self._start_in_children([veid], 1):
            error = "it could not start again (the node's log says why)"
        again = self._running_init(veid)
        return self._record_event(veid, reason, current.pid, again.pid if again else None,
                                  error)

    def settling(self, veid):
        """True while VE ``veid`` is between states on the node: an action holds its
        lock, or its init ended by itself and the node watcher has yet to clean up
        after it (and restart it, if it rebooted). Its state then says nothing yet."""
        try:
            with state.locked(self.layout.lock(veid), veid, 0):
                pass
        except VEError:
            return True  # busy (StateError): someone works on it right now
        record = state.read_init(self.layout.state(veid))
        if record is None or record.is_alive():
            return False
        from .. import watch
        return record.watched and watch.running(self.layout)

    def _oom_kills(self, veid):
        """OOM kills in the VE's memory cgroup during the run that ended (0 if unknown)."""
        try:
            return self.cgroups.usage(str(veid)).oom_kills
        except (OSError, ValueError):
            return 0

    def _exit_reason(self, veid, record, watched_end):
        if record.boot_id != proc.boot_id():
            return NODE_REBOOT
        try:
            with open(_halt_path(self.layout, veid)) as f:
                halt = json.load(f)
            if (halt["pid"], halt["start_time"]) == (record.pid, record.start_time):
                return halt["action"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return CRASH if record.watched and watched_end else UNKNOWN

    def _record_event(self, veid, reason, old_pid, new_pid, error):
        now = time.time()
        event = {"id": f"{time.time_ns()}-{veid}", "veid": veid, "reason": reason,
                 "time": now, "init_pid": old_pid, "restarted": new_pid is not None,
                 "new_pid": new_pid, "error": error}
        directory = self.layout.root / "events"
        directory.mkdir(mode=0o700, exist_ok=True)
        atomic_write(directory / f"{event['id']}.json", json.dumps(event) + "\n", durable=False)
        for stale in sorted(os.listdir(directory))[:-MAX_EVENTS]:
            _forget(directory / stale)
        log.info("VE %s ended (%s)%s", veid, reason, ", started again" if new_pid else "")
        return event

    def events(self):
        """The recorded VE ends not yet forgotten, oldest first (dicts, see the module)."""
        directory = self.layout.root / "events"
        found = []
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
        except FileNotFoundError:
            return found
        for name in names:
            try:
                with open(directory / name) as f:
                    found.append(json.load(f))
            except (OSError, ValueError):
                continue  # forgotten meanwhile, or half-written by a crash
        return found

    def forget_event(self, event_id):
        """Drop event ``event_id`` (its consumer has recorded it); unknown ids are fine."""
        name = str(event_id)
        if not name or "/" in name or name.startswith("."):
            return
        _forget(self.layout.root / "events" / f"{name}.json")


def _forget(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

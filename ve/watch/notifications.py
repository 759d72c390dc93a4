"""The watcher's seccomp listeners: answer sysinfo(2), note reboot(2), let the rest run.

Every VE's init (and every command run in it) hands its listener to the
watcher. A sysinfo(2) call is answered from the VE's cgroup (``answers.py``);
a reboot(2) call from a caller holding CAP_SYS_BOOT is noted as the VE's
halt intent before it runs (``Engine.reap`` reads it when init is gone);
anything the watcher cannot answer runs as if there were no filter.
"""

import os
import select

from ..kernel import proc, seccomp
from ..log import get as get_logger

log = get_logger(__name__)

CAP_SYS_BOOT = 22


class Listener:
    """A seccomp listener: of a VE's init (``init`` = (pid, start time)) or of an exec."""

    def __init__(self, veid, fd, init):
        self.veid, self.fd, self.init = veid, fd, init


class NotificationsMixin:
    """The listener half of the Watcher (needs ``answers``, ``holder``, ``_add``)."""

    def _listen(self, veid, fd, init):
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
        self.listeners[fd] = Listener(veid, fd, init)
        self._add(fd, lambda events: self._notified(fd, events))
        if self.holder is not None:
            self.holder.keep(fd, veid, init)

    def _notified(self, fd, events):
        listener = self.listeners.get(fd)
        if listener is None:
            return
        if events & select.EPOLLIN:
            note = seccomp.receive(fd)
            if note is not None:
                self._answer(listener, note)
        elif events & (select.EPOLLHUP | select.EPOLLERR):  # no process under it is left
            self._remove(fd)
            del self.listeners[fd]
            os.close(fd)

    def _answer(self, listener, note):
        try:
            if note.call == "sysinfo" and note.arch == seccomp.AUDIT_ARCH_X86_64:
                data = self.answers.sysinfo(listener.veid, listener.init[1])
                if data is not None:
                    return seccomp.write_answer(listener.fd, note, data)
            elif note.call == "reboot" and _may_reboot(note.pid) \
                    and seccomp.still_valid(listener.fd, note.id):
                from ..engine.exits import note_halt
                # note.args: (magic, magic2, cmd)
                note_halt(self.layout, listener.veid, *listener.init, note.args[2])
            return seccomp.let_through(listener.fd, note.id)
        except OSError as exc:
            log.warning("VE %s: notification %s not answered: %s", listener.veid, note.call, exc)
            try:
                seccomp.let_through(listener.fd, note.id)
            except OSError:
                pass
            return None


def _may_reboot(pid):
    """True if ``pid`` holds CAP_SYS_BOOT (in its namespace): its reboot(2) will work."""
    return bool(proc.status_masks(pid, "CapEff").get("CapEff", 0) >> CAP_SYS_BOOT & 1)

"""The watcher's twin: a copy of every seccomp listener and console master, so none dies
with the watcher.

A VE's sysinfo(2) and reboot(2) wait on its seccomp listener; once no process
holds that listener, the kernel fails them with ENOSYS for good (glibc then
reports garbage memory sizes, systemd freezes instead of rebooting). The
holder is a small child of the watcher that holds a copy of each listener
and does nothing else. When the watcher dies, the holder turns itself into a
new watcher (exec, the listeners kept open), which forks a new holder; when
the holder dies, the watcher forks another. Only both dying at once loses
the listeners (running VEs then keep running, without those answers). Console
masters (``consoles.py``) are kept the same way, so a VE's console and what waits on
it (a getty, a login) outlive a watcher restart; output written meanwhile waits in
the terminal until the new watcher reads it.
"""

import json
import os
import select
import socket
import sys

INHERIT_ENV = "VE_WATCH_INHERIT"  # "fd:veid:pid:start_time:kind,..." for the next watcher
LISTENER, CONSOLE = "listener", "console"


def inherited():
    """What a holder passed on to this watcher: [(fd, veid, (pid, start_time), kind)],
    kind LISTENER or CONSOLE."""
    found = []
    for item in filter(None, os.environ.pop(INHERIT_ENV, "").split(",")):
        fd, veid, pid, start, *kind = item.split(":")
        found.append((int(fd), int(veid), (int(pid), int(start)),
                      kind[0] if kind else LISTENER))
    return found


class HolderLink:
    """The watcher's end: fork the holder, keep it fed, notice when it is gone."""

    def __init__(self, held, env, options=()):
        """Fork a holder with copies of ``held`` ({fd: (veid, init, kind)}); ``env`` and
        ``options`` (of ``vectl watch``) start the watcher that would replace this one."""
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            ours.close()
            os.setsid()  # not in the watcher's process group: killing that group spares it
            _hold(theirs, dict(held), env, options)
        theirs.close()
        self.sock, self.pid = ours, pid

    def keep(self, fd, veid, init, kind=LISTENER):
        """Give the holder a copy of ``fd`` (a listener, or a console master)."""
        try:
            socket.send_fds(self.sock, [json.dumps([veid, list(init), kind]).encode()], [fd])
        except OSError:
            pass  # it died: the watcher forks another, with every listener

    def quit(self):
        """Tell the holder the watcher stops on purpose: it just exits."""
        try:
            self.sock.send(b"quit")
        except OSError:
            pass
        self.sock.close()
        os.waitpid(self.pid, 0)

    def reap(self):
        """Collect a dead holder's status (the watcher then starts a new one)."""
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _hold(sock, held, env, options):
    """Body of the holder: keep listeners until the watcher goes, then become it."""
    try:
        keep = set(held) | {sock.fileno()}
        for fd in range(3, _max_fd()):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        poller = select.epoll()
        poller.register(sock.fileno(), select.EPOLLIN)
        for fd in held:
            poller.register(fd, 0)  # HUP only: no process under it is left
        while True:
            for fd, events in poller.poll():
                if fd == sock.fileno():
                    message, fds, _, _ = socket.recv_fds(sock, 4096, 1)
                    if message == b"quit":
                        os._exit(0)
                    if not message:  # the watcher died
                        _become_watcher(held, env, options)
                    veid, init, kind = json.loads(message)
                    for new in fds:
                        held[new] = (veid, tuple(init), kind)
                        poller.register(new, 0)
                elif events & (select.EPOLLHUP | select.EPOLLERR):
                    poller.unregister(fd)
                    os.close(fd)
                    held.pop(fd, None)
    except BaseException:
        os._exit(1)


def _become_watcher(held, env, options):
    if not held:
        os._exit(0)  # nothing to pass on: the next start of a VE starts a watcher
    for fd in held:
        os.set_inheritable(fd, True)
    env = dict(os.environ, **env)
    env[INHERIT_ENV] = ",".join(f"{fd}:{veid}:{init[0]}:{init[1]}:{kind}"
                                for fd, (veid, init, kind) in held.items())
    os.execve(sys.executable, [sys.executable, "-m", "ve.cli", "watch", *options], env)


def _max_fd():
    try:
        return max(int(n) for n in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        return 1024

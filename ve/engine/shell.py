"""Run commands inside a running VE: ``exec`` (piped) and ``enter`` (terminal).

The relay and attach modules are imported on use: they pull in termios,
selectors and socket, which a ``vectl start`` does not need.
"""

import os
import signal
from collections import namedtuple

from .. import syscalls, validate
from ..errors import InvalidConfig, ResourceError, StateError
from ..kernel import proc

CAPTURE_LIMIT = 64 << 20  # bytes of a captured stream that exec keeps at most
EXEC_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root", "container=vectl")


class ExecResult(namedtuple("ExecResult", "returncode stdout stderr")):
    """Outcome of ``Engine.exec``; stdout/stderr are empty when streamed."""

    __slots__ = ()


class ShellMixin:
    """exec and enter verbs of the Engine."""

    def exec(self, veid, argv, input=b"", stdout=None, stderr=None, timeout=None,
             max_output=CAPTURE_LIMIT):
        """Run ``argv`` in the VE as its root; return an ExecResult.

        Output is captured (at most ``max_output`` bytes a stream), or written
        to the binary streams given. A command still running after
        ``timeout`` seconds, or writing more than it may, is killed and
        ResourceError raised: a VE's programs are hostile input, and the
        caller's wait and memory stay bounded.
        """
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise InvalidConfig("exec needs a command")
        from ..kernel import relay
        from ..kernel import attach
        pidfd, spec, record = self._attach_spec(veid, argv, EXEC_ENV)
        try:
            helper, stdin_w, out_r, err_r, listener = attach.run_piped(spec)
        except OSError as exc:
            raise ResourceError(f"cannot run a command in the VE: {exc}", veid) from exc
        finally:
            os.close(pidfd)
        self._hand_to_watcher(veid, record, listener, helper)
        try:
            code, out, err = relay.pump_pipes(helper, stdin_w, out_r, err_r, input, stdout,
                                              stderr, timeout, max_output)
        except OSError as exc:
            raise ResourceError(f"{argv[0]}: {exc.strerror}", veid) from exc
        return ExecResult(code, out, err)

    def enter(self, veid, argv=("/bin/sh", "-l"), term="xterm", stdin_fd=0, stdout_fd=1):
        """Open an interactive shell in the VE on a new terminal; return its exit code."""
        env = EXEC_ENV + (f"TERM={term if term.replace('-', '').isalnum() else 'xterm'}",)
        from ..kernel import relay
        from ..kernel import attach
        pidfd, spec, record = self._attach_spec(veid, argv, env)
        try:
            helper, master, listener = attach.run_on_pty(spec)
        except OSError as exc:
            raise ResourceError(str(exc), veid) from exc
        finally:
            os.close(pidfd)
        self._hand_to_watcher(veid, record, listener, helper)
        return relay.pump_terminal(helper, master, stdin_fd, stdout_fd)

    def _attach_spec(self, veid, argv, env):
        veid = validate.veid(veid)
        cfg = self._read_config(veid)
        record = self._running_init(veid)
        pidfd = proc.pidfd_for(record.pid, record.start_time) if record else None
        if pidfd is None:
            raise StateError("the VE is not running", veid)
        # Into init's own cgroup2 group: the VE's top group may have controllers
        # enabled for its children (a VE's systemd does so), and then takes no process.
        leaf = self.cgroups.leaf_of(str(veid), record.pid)
        procs = tuple(self.cgroups.join_files(str(veid), leaf=leaf))
        from ..kernel.attach import AttachSpec
        from .. import watch
        # The command sees the VE's own sysinfo(2), and its reboot(2) is seen, like
        # those of the init's children, if a watcher is there to answer them.
        notify = watch.in_use(self.layout)
        spec = AttachSpec(pidfd, procs, argv, env, bool(cfg.idmap_base), notify,
                          syscalls.rules(cfg.seccomp_allow))
        return pidfd, spec, record

    def _hand_to_watcher(self, veid, record, listener, helper):
        """Give the command's seccomp listener to the watcher; without it the command
        could not go on (its sysinfo would fail), so it is killed."""
        if listener is None:
            return
        from .. import watch
        try:
            watch.adopt(self.layout, veid, record, listener)
        except watch.WatcherGone as exc:
            os.kill(helper, signal.SIGKILL)
            raise ResourceError(str(exc), veid) from exc
        finally:
            os.close(listener)

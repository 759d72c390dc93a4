"""Run a command inside a running VE (``vectl exec`` and ``vectl enter``).

A forked child joins the VE's cgroups and, through a pidfd of its init, all
of its namespaces at once; it then takes the VE root's identity, drops the
same capabilities as init, sets no_new_privs and forks, because only children
enter a joined PID namespace. The command gets no host descriptor: its stdio
are pipes (exec) or a pseudo-terminal from the VE's own devpts (enter), and
the caller relays the data.
"""

import fcntl
import os
import select
import signal
import socket
import termios

from . import caps, libc, seccomp, spawn

# The time namespace too (every VE has its own, and CRIU makes a restored VE a new
# one): a command left in another one would make the VE's next checkpoint fail.
_JOIN = spawn.NAMESPACES
_JOIN_USERNS = _JOIN | libc.CLONE_NEWUSER
# Commands the host runs in a VE (vectl exec, enter) go before the VE's own
# processes when its memory fills (see INIT_OOM_SCORE_ADJ in ve/engine/initguard.py).
EXEC_OOM_SCORE_ADJ = 500


class AttachSpec:
    """Where and what to run (primitives only)."""

    def __init__(self, pidfd, cgroup_files, argv, env, userns, notify=False, seccomp_rules=()):
        self.pidfd = pidfd
        self.cgroup_files = cgroup_files
        self.argv = list(argv)
        self.env = dict(e.split("=", 1) for e in env)
        self.userns = userns
        self.notify = notify  # the command's seccomp filter has a listener, like init's
        self.seccomp_rules = tuple(seccomp_rules)  # the calls its filter denies


def run_piped(spec):
    """Start ``spec.argv`` in the VE with pipes for stdio.

    Return (pid of the host-side helper, stdin writer fd, stdout reader fd,
    stderr reader fd, seccomp listener fd or None); the helper's exit status
    is the command's.
    """
    pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    highest = caps.last_cap()
    seccomp.prepare(spec.notify, spec.seccomp_rules)
    pid = os.fork()
    if pid == 0:
        try:
            parent_sock.close()
            os.dup2(pipes[0][0], 0)
            os.dup2(pipes[1][1], 1)
            os.dup2(pipes[2][1], 2)
            cgroup_fds = _join(spec, highest)
            _hand_back(child_sock, spec)
            _fork_and_exec(spec, cgroup_fds)
        except BaseException as exc:
            os.write(2, f"vectl: cannot enter the VE: {exc}\n".encode())
            os._exit(126)
    child_sock.close()
    for fd in (pipes[0][0], pipes[1][1], pipes[2][1]):
        os.close(fd)
    fds = _take_back(parent_sock)
    return pid, pipes[0][1], pipes[1][0], pipes[2][0], (fds[0] if fds and spec.notify else None)


def run_on_pty(spec):
    """Start ``spec.argv`` in the VE on a new terminal of the VE's devpts.

    Return (helper pid, pty master fd, seccomp listener fd or None). The
    master is passed back over a socket because it is opened only after
    joining the VE's mount namespace.
    """
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    highest = caps.last_cap()
    seccomp.prepare(spec.notify, spec.seccomp_rules)
    pid = os.fork()
    if pid == 0:
        try:
            parent_sock.close()
            cgroup_fds = _join(spec, highest)
            master, slave = os.openpty()  # resolves /dev/ptmx inside the VE
            _hand_back(child_sock, spec, [master])
            _fork_and_exec(spec, cgroup_fds, terminal=slave)
        except BaseException as exc:
            os.write(2, f"vectl: cannot enter the VE: {exc}\n".encode())
            os._exit(126)
    child_sock.close()
    fds = _take_back(parent_sock)
    if not fds:
        _, status = os.waitpid(pid, 0)
        raise OSError(f"could not open a terminal in the VE (status {status})")
    return pid, fds[0], (fds[1] if spec.notify else None)


def _hand_back(sock, spec, fds=()):
    """Install the VE's seccomp filter (the command does not inherit init's); send the
    caller what the helper opened inside (and the filter's listener)."""
    fds = list(fds)
    listener = seccomp.install(spec.notify, spec.seccomp_rules)
    if listener is not None:
        fds.append(listener)
    if fds:
        socket.send_fds(sock, [b"h"], fds)
    for fd in fds:
        os.close(fd)
    sock.close()


def _take_back(sock):
    try:
        _, fds, _, _ = socket.recv_fds(sock, 16, 4)
    finally:
        sock.close()
    return fds


def _join(spec, highest_cap):
    """Join the VE's namespaces; return open cgroup files for the command to join.

    The helper itself stays in the caller's cgroups: it is a copy of the
    caller (a worker can be large), and inside the VE's memory cgroup the
    VE's OOM killer would pick it instead of the VE's own hog. The files are
    opened here, as host root, because they are out of reach after setns;
    the kernel checks cgroup moves against the opener's credentials.
    """
    cgroup_fds = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in spec.cgroup_files]
    _prefer_for_oom()
    libc.setns(spec.pidfd, _JOIN_USERNS if spec.userns else _JOIN)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    libc.join_new_session_keyring()
    caps.drop_bounding(highest_cap)
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    os.chdir("/")
    return cgroup_fds


def _prefer_for_oom():
    """Make the command a likelier OOM victim in the VE than its init and services.

    Written to the host's /proc (a VE's own /proc may be anything) before the
    helper leaves; raising one's own score needs no privilege. The helper stays
    in the caller's cgroups, where a larger score only makes it go first too.
    """
    with open("/proc/self/oom_score_adj", "r+") as f:
        if int(f.read()) < EXEC_OOM_SCORE_ADJ:
            f.seek(0)
            f.write(str(EXEC_OOM_SCORE_ADJ))


def _fork_and_exec(spec, cgroup_fds, terminal=None):
    """Fork the relay into the joined PID namespace; relay its exit status.

    The relay, a process of the VE, forks and execs the command, so that the
    command's parent is in the VE: whatever the command leaves behind, and the
    command itself if the relay goes, is orphaned to the VE's init (orphans go
    to the reaper of their dead parent's PID namespace). With the helper as
    the command's parent, a command that outlived it (one that changed its
    user, which clears the parent-death signal) landed under the host's PID 1,
    out of the VE's process tree, where a checkpoint does not look.
    """
    helper = os.pidfd_open(os.getpid())  # its PID is not visible from inside
    relay = os.fork()
    if relay == 0:
        try:
            _relay(spec, cgroup_fds, terminal, helper)
        except BaseException as exc:
            os.write(2, f"vectl: {spec.argv[0]}: {exc}\n".encode())
        os._exit(127)
    libc.close_fds_from(3)
    for fd in (0, 1, 2):
        os.close(fd)  # the relay and the command hold the pipes (or the terminal)
    _, status = os.waitpid(relay, 0)
    os._exit(exit_code(status))


def _relay(spec, cgroup_fds, terminal, helper):
    """In the VE: run the command as a child, exit with its status.

    If the helper dies (the caller's timeout or kill), the relay ends the
    command's session (the command is a session leader) and exits.
    """
    command = None

    def end_session(signum, frame):
        if command is not None:
            _kill_session(command)
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, end_session)
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGTERM)
    if select.select([helper], [], [], 0)[0]:  # it went before the signal was armed
        os._exit(128 + signal.SIGTERM)
    # Nothing of the host's stays open in a process of the VE.
    _close_all_but({0, 1, 2, *cgroup_fds} | ({terminal} if terminal is not None else set()))
    libc.set_name("vectl-relay")
    relay = os.getpid()  # as seen in the VE
    command = os.fork()
    if command == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _exec_command(spec, cgroup_fds, terminal, relay)
    for fd in cgroup_fds:
        os.close(fd)
    for fd in (0, 1, 2) if terminal is None else (0, 1, 2, terminal):
        os.close(fd)
    while True:
        try:
            _, status = os.waitpid(command, 0)
            break
        except ChildProcessError:
            os._exit(127)
    os._exit(exit_code(status))


def _close_all_but(keep):
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor


def _kill_session(leader):
    try:
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _exec_command(spec, cgroup_fds, terminal, relay):
    """In the VE, the command's side: join the VE's cgroups, own a session, exec."""
    try:
        # The relay's end (its helper's kill) ends the command too.
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != relay:
            os._exit(128 + signal.SIGKILL)
        for fd in cgroup_fds:
            os.write(fd, b"0")  # see CgroupDriver.join_files
        # Its own session and process group, like a login's: one outside the
        # VE's PID namespace is not the VE's to hold (and a checkpoint refuses it).
        os.setsid()
        if terminal is not None:
            fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(terminal, fd)
        libc.close_fds_from(3)
        os.execvpe(spec.argv[0], spec.argv, spec.env)
    except BaseException as exc:
        os.write(2, f"vectl: {spec.argv[0]}: {exc}\n".encode())
        os._exit(127)


def exit_code(status):
    """Turn a wait status into a shell-style exit code (128+N for signal N)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def set_hostname(pidfd, userns, hostname):
    """Change the host name inside a running VE's UTS namespace."""
    pid = os.fork()
    if pid == 0:
        try:
            flags = libc.CLONE_NEWUTS | (libc.CLONE_NEWUSER if userns else 0)
            libc.setns(pidfd, flags)
            libc.sethostname(hostname)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if exit_code(status) != 0:
        raise OSError("could not set the host name inside the VE")

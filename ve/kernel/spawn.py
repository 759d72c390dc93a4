"""Start a VE's init: fork into fresh namespaces and exec, leaving no supervisor.

The work is done by a small C program (``spawn_init.c``, built by
``spawn_helper``), started with posix_spawn: it joins the VE's cgroups and
unshares every namespace (the setup process); its child becomes PID 1 of the
new PID namespace, builds the mount tree, pivots and execs the VE's init.
The setup process exits at once, so init is re-parented to the host's init
and no host process stays behind for the VE. What to do (paths, the lists of
masked files and devices, the seccomp program) is decided here and sent to
it as a spec; this side writes the id maps when asked.

Failures in either process travel back as text over a close-on-exec pipe: EOF
with no text means init was exec'd.
"""

import fcntl
import os
import struct
from collections import namedtuple

from . import caps, libc, rootfs, seccomp, spawn_helper, ucounts

# The namespaces every VE has of its own (spawn_init.c unshares these, and the user
# namespace unless the VE is privileged); exec and enter join them all.
NAMESPACES = (libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC
              | libc.CLONE_NEWNET | libc.CLONE_NEWPID | libc.CLONE_NEWCGROUP
              | libc.CLONE_NEWTIME)


class InitSpec(namedtuple("InitSpec", "private mountpoint hostname argv env cgroup_files "
                                       "idmap_base idmap_size clone_into notify lxcfs cgroup2 "
                                       "seccomp_rules console files",
                          defaults=(65536, None, False, None, False, (), None, ()))):
    """What ``spawn_init`` needs, in primitives (no engine config objects).

    private: the VE's root filesystem directory on the host; mountpoint: where
    it is mounted inside the VE's mount namespace; argv: init's command line,
    resolved inside the VE; env: ("KEY=value", ...); cgroup_files: files to
    write "0" into to join the VE's cgroups; idmap_base: first host uid/gid of
    the VE, 0 = no user namespace; clone_into: a v2 group directory to create
    the setup process in (CLONE_INTO_CGROUP), or None; notify: install the
    seccomp filter (``seccomp.py``) with a listener and hand it back (without:
    the same filter, sysinfo and reboot let through); lxcfs: the host directory
    an lxcfs serves, whose /proc files are bound over the VE's (None: none);
    cgroup2: mount the VE's own cgroup2 tree at /sys/fs/cgroup; seccomp_rules:
    the calls the filter denies ((ABI, number, errno), ...; ``ve.syscalls.rules``);
    console: the terminal end of the VE's console pty (``kernel/console.py``), bound
    over its /dev/console and init's stdin, stdout and stderr (None: /dev/null);
    files: ((path in the VE, bytes), ...) that PID 1 writes as VE root before init
    runs (``vefiles.replace``); one it cannot write is a warning, not a failure.
    """

    __slots__ = ()


class Spawned(namedtuple("Spawned", "pid listener warnings", defaults=((),))):
    """A started init: its host PID, the seccomp listener fd (None without notify) and
    what went wrong that did not stop it (texts: the files it could not write)."""

    __slots__ = ()


def spawn_init(spec):
    """Start the VE's init as described by ``spec``; return a Spawned.

    Raises OSError with the failing step's message if any step fails; the
    half-started process tree is killed before returning.
    """
    payload = _encode(spec)
    binary = spawn_helper.path()
    ours, theirs = [], {}  # our ends; the program's descriptors by number
    try:
        for number, (mine, its) in ((FD_SPEC, _pipe(reverse=True)), (FD_ERR, _pipe()),
                                    (FD_UP, _pipe()), (FD_DOWN, _pipe(reverse=True)),
                                    (FD_LISTENER, _fd_channel() if spec.notify else (None, None))):
            ours.append(mine)
            if its is not None:
                theirs[number] = its
        if spec.console is not None:
            theirs[FD_CONSOLE] = os.dup(spec.console)
        helper = _start_helper(binary, theirs)
    except BaseException:
        _close(*ours, *theirs.values())
        raise
    _close(*theirs.values())
    spec_w, err_r, up_r, down_w, fds_r = ours
    try:
        try:
            _send_spec(spec_w, payload)
        except BaseException:
            _kill_quietly(helper)  # before it sees a spec cut short (it would refuse it)
            os.waitpid(helper, 0)
            raise
        os.close(spec_w)  # EOF: it reads the whole spec before anything else
        spec_w = None
        pid, warnings = _drive_setup(spec, helper, err_r, up_r, down_w)
        return Spawned(pid, _receive_fd(fds_r) if spec.notify else None, warnings)
    finally:
        _close(spec_w, err_r, up_r, down_w, fds_r)


# The program's descriptors (spawn_init.c).
FD_SPEC, FD_ERR, FD_UP, FD_DOWN, FD_LISTENER, FD_CONSOLE = 3, 4, 5, 6, 7, 8


def _pipe(reverse=False):
    """(our end, its end) of a new pipe: we read, it writes (``reverse``: the other way)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    return (write_end, read_end) if reverse else (read_end, write_end)


def _start_helper(binary, fds):
    """posix_spawn ``binary`` with ``fds`` ({number: our descriptor}) at those numbers.

    Each descriptor is first copied above the numbers used (a plain dup2 could
    overwrite one not yet placed); the copies are close-on-exec and vanish.
    """
    high = {}
    try:
        for number, fd in fds.items():
            high[number] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16)
        actions = [(os.POSIX_SPAWN_DUP2, fd, number) for number, fd in high.items()]
        return os.posix_spawn(binary, [binary], {}, file_actions=actions)
    finally:
        _close(*high.values())


def _send_spec(fd, payload):
    view = memoryview(payload)
    try:
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass  # it failed before reading it all: its error pipe says why


def _encode(spec):
    """The spec as the program reads it: records of a tag byte, a 32-bit length, bytes."""
    records = []

    def add(tag, *parts):
        """One record; str parts are names and paths (no NUL), bytes are contents."""
        encoded = []
        for part in parts:
            if not isinstance(part, bytes):
                part = os.fsencode(str(part))
                if b"\0" in part:
                    raise OSError(f"a NUL byte in a VE start parameter: {part[:100]!r}")
            encoded.append(part)
        data = b"\0".join(encoded)
        records.append(struct.pack("<cI", tag, len(data)) + data)

    add(b"p", spec.private)
    add(b"m", spec.mountpoint)
    add(b"h", spec.hostname)
    for tag, items in ((b"a", spec.argv), (b"e", spec.env), (b"c", spec.cgroup_files)):
        for item in items:
            add(tag, item)
    if spec.clone_into:
        add(b"G", spec.clone_into)
    if spec.idmap_base:
        add(b"u", spec.idmap_base)
        for path, value in ucounts.VE_CAPS.items():
            add(b"v", path, f"{value}\n")
    if spec.notify:
        add(b"n", 1)
    if spec.lxcfs:
        from . import lxcfs_mounts
        for source, target in lxcfs_mounts.start_binds(spec.lxcfs):
            add(b"l", source, target)
    if spec.cgroup2:
        add(b"g", 1)
    add(b"s", seccomp.compiled(spec.notify, spec.seccomp_rules))
    if spec.console is not None:
        # Its name in the host's devpts, resolved in the VE's copy of the mount
        # namespace: a bind from the descriptor (/proc/self/fd) would name the
        # host's mount, which a mount namespace may not take binds from (EINVAL).
        add(b"t", os.ttyname(spec.console))
    for path, data in spec.files:
        add(b"f", path, data)
    add(b"k", caps.last_cap())
    for number in caps.DROPPED.values():
        add(b"B", number)
    for name in rootfs.DEVICES:
        add(b"D", name)
    for name, target in rootfs.DEV_LINKS.items():
        add(b"L", name, target)
    add(b"K", rootfs.CONSOLE_MARK)
    for tag, paths in ((b"M", rootfs.MASKED), (b"R", rootfs.READ_ONLY)):
        for path in paths:
            add(tag, path)
    add(b"Z")  # the end: a spec cut short (the caller interrupted) is refused, not run
    return b"".join(records)


def _fd_channel():
    """(our end, its end) of a socket pair for one descriptor from init (SCM_RIGHTS)."""
    import socket  # on use: most starts pass no descriptor
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    return a.detach(), b.detach()


def _receive_fd(channel):
    import socket
    sock = socket.socket(fileno=os.dup(channel))
    try:
        sock.setblocking(False)  # init sent it before it exec'd, which has happened
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    except BlockingIOError:
        fds = []
    finally:
        sock.close()
    if not fds:
        raise OSError("init did not hand over its seccomp listener")
    return fds[0]


def _close(*fds):
    for fd in fds:
        if fd is not None:
            os.close(fd)


def _drive_setup(spec, helper, err_r, up_r, down_w):
    """Follow the program through the hand-shake; return (init's PID, warnings)."""
    setup = init_pid = None
    try:
        # Each answer is what the step expects, or "" (EOF: the program failed and
        # its error pipe says why); anything else would leave both sides waiting.
        line = _expect(_read_line(up_r), "pid ")
        setup = int(line[4:]) if line else None
        if setup and spec.idmap_base and _expect(_read_line(up_r), "unshared"):
            _write_id_maps(setup, spec.idmap_base, spec.idmap_size)
            os.write(down_w, b"mapped\n")
        line = _expect(_read_line(up_r), "") if setup else ""
        init_pid = int(line) if line else None
    except BaseException:
        # The setup process may be waiting for "mapped": it must not outlive us.
        _kill_quietly(setup or helper)
        raise
    finally:
        os.waitpid(helper, 0)
        if setup and setup != helper:  # born beside it in a v2 group, our child too
            os.waitpid(setup, 0)
    # EOF here means init exec'd or died; a failed start is cleaned up by the
    # caller through the cgroup (a reported PID may already be reused).
    error, warnings = _split_report(_read_all(err_r))
    if error or init_pid is None:
        raise OSError(error or "VE setup process exited without starting init")
    return init_pid, warnings


def _expect(line, prefix):
    """``line`` if it is "" or what the hand-shake expects next (``prefix`` and, except
    for "unshared", a number); else OSError."""
    number = line[len(prefix):]
    if line and not (line.startswith(prefix) and (prefix == "unshared" or number.isdigit())):
        raise OSError(f"the VE spawner answered {line[:100]!r}, expected {prefix or 'a PID'}")
    return line


def _write_id_maps(pid, base, size):
    # uid_map/gid_map accept one write each; the caller has CAP_SETUID and
    # CAP_SETGID in the parent namespace, so setgroups stays allowed.
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as handle:
            handle.write(f"0 {base} {size}\n")


# On the error pipe a warning is framed by these; anything else there is a failure.
_WARNING, _WARNING_END = "\x01", "\x02"


def _split_report(text):
    """(the failure's text or "", (warnings, ...)) of what the children wrote."""
    failure, warnings = [], []
    while (start := text.find(_WARNING)) >= 0 and (end := text.find(_WARNING_END, start)) >= 0:
        failure.append(text[:start])
        warnings.append(text[start + 1:end].strip())
        text = text[end + 1:]
    failure.append(text)
    return "".join(failure).strip(), tuple(warnings)


def _read_line(fd):
    """One line, read a byte at a time: the next one may already be in the pipe (the
    setup process writes "pid N" and then "unshared" without waiting in between)."""
    data = b""
    while not data.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        data += byte
    return data.decode().strip()


def _read_all(fd):
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def _kill_quietly(pid):
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass

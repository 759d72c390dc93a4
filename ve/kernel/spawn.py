"""Start a VE's init: fork into fresh namespaces and exec, leaving no supervisor.

The caller (host root) forks a setup child that joins the VE's cgroups and
unshares every namespace; its own child becomes PID 1 of the new PID
namespace, builds the mount tree, pivots and execs the VE's init. The setup
child exits at once, so init is re-parented to the host's init and no host
process stays behind for the VE.

Failures in either child travel back as text over a close-on-exec pipe: EOF
with no text means init was exec'd.
"""

import os
import time
from collections import namedtuple

from . import caps, clone, libc, netif, rootfs, seccomp, ucounts, vefiles

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
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    up_r, up_w = os.pipe2(os.O_CLOEXEC)      # setup child -> caller
    down_r, down_w = os.pipe2(os.O_CLOEXEC)  # caller -> setup child
    fds_r, fds_w = _fd_channel() if spec.notify else (None, None)  # init -> caller
    highest_cap = caps.last_cap()
    seccomp.prepare(spec.notify, spec.seccomp_rules)
    try:
        setup_pid = clone.fork_into_cgroup(spec.clone_into)
    except OSError:
        _close(err_r, err_w, up_r, up_w, down_r, down_w, fds_r, fds_w)
        raise
    if setup_pid == 0:
        _close(err_r, up_r, down_w, fds_r)
        _run_setup_child(spec, err_w, up_w, down_r, highest_cap, fds_w)
    _close(err_w, up_w, down_r, fds_w)
    try:
        pid, warnings = _drive_setup(spec, setup_pid, err_r, up_r, down_w)
        return Spawned(pid, _receive_fd(fds_r) if spec.notify else None, warnings)
    finally:
        _close(err_r, up_r, down_w, fds_r)


def _fd_channel():
    """A socket pair for one descriptor from init to the caller (SCM_RIGHTS)."""
    import socket  # on use: most starts pass no descriptor
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    return a.detach(), b.detach()


def _send_fd(channel, fd):
    import socket
    with socket.socket(fileno=channel) as sock:
        socket.send_fds(sock, [b"fd"], [fd])


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


def _drive_setup(spec, setup_pid, err_r, up_r, down_w):
    init_pid = None
    try:
        if spec.idmap_base and _read_line(up_r) == "unshared":
            _write_id_maps(setup_pid, spec.idmap_base, spec.idmap_size)
            os.write(down_w, b"mapped\n")
        line = _read_line(up_r)
        init_pid = int(line) if line.isdigit() else None
    except BaseException:
        # The setup child may be waiting for "mapped": it must not outlive us.
        _kill_quietly(setup_pid)
        raise
    finally:
        os.waitpid(setup_pid, 0)
    # EOF here means init exec'd or died; a failed start is cleaned up by the
    # caller through the cgroup (a reported PID may already be reused).
    error, warnings = _split_report(_read_all(err_r))
    if error or init_pid is None:
        raise OSError(error or "VE setup child exited without starting init")
    return init_pid, warnings


def _write_id_maps(pid, base, size):
    # uid_map/gid_map accept one write each; the caller has CAP_SETUID and
    # CAP_SETGID in the parent namespace, so setgroups stays allowed.
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as handle:
            handle.write(f"0 {base} {size}\n")


def _run_setup_child(spec, err_w, up_w, down_r, highest_cap, fds_w):
    """Body of the setup child; never returns."""
    try:
        os.setsid()
        _join_cgroups(spec.cgroup_files)
        libc.unshare(libc.CLONE_NEWNS)
        rootfs.bind_root(spec.private, spec.mountpoint, nodev=bool(spec.idmap_base))
        libc.unshare(NAMESPACES | (libc.CLONE_NEWUSER if spec.idmap_base else 0))
        # Still host root's /proc/self: after setresuid it is no longer ours to write.
        _boot_clock_from_zero()
        if spec.idmap_base:
            os.write(up_w, b"unshared\n")
            if _read_line(down_r) != "mapped":
                os._exit(1)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            ucounts.cap_this_ve()
        init_pid = os.fork()
        if init_pid == 0:
            os.close(up_w)
            _run_init_child(spec, err_w, highest_cap, fds_w)
        os.write(up_w, f"{init_pid}\n".encode())
        os._exit(0)
    except BaseException as exc:  # report whatever went wrong, then die
        _report(err_w, "setup", exc)
        os._exit(1)


def _boot_clock_from_zero():
    """Start the VE's CLOCK_BOOTTIME at zero: its uptime is the VE's, as on a VPS.

    Its time namespace takes offsets only before a process enters it (init, next).
    CLOCK_MONOTONIC keeps the host's: it is what a checkpoint moves across hosts.
    """
    # Whole seconds: the clock may not go below zero, and nanoseconds may not be negative.
    seconds = int(time.clock_gettime(time.CLOCK_BOOTTIME))
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(f"boottime {-seconds} 0\n")


def _run_init_child(spec, err_w, highest_cap, fds_w):
    """Body of the VE's PID 1 until exec; never returns."""
    try:
        rootfs.finish_root(os.path.basename(spec.mountpoint), spec.lxcfs, spec.cgroup2,
                           console=_fd_path(spec.console))
        libc.sethostname(spec.hostname)
        _write_files(spec.files, err_w)
        netif.link_up("lo")
        libc.join_new_session_keyring()
        caps.drop_bounding(highest_cap)
        _stdio_on(spec.console)
        # The last step: from here on the deny list holds, and with a listener
        # sysinfo and reboot wait for the watcher.
        listener = seccomp.install(spec.notify, spec.seccomp_rules)
        if listener is not None:
            _send_fd(fds_w, listener)
            os.close(listener)
        # No host descriptor may reach the VE: keep only stdio and the
        # close-on-exec error pipe.
        os.closerange(3, err_w)
        libc.close_fds_from(err_w + 1)
        os.execve(spec.argv[0], list(spec.argv), dict(e.split("=", 1) for e in spec.env))
    except BaseException as exc:
        _report(err_w, "init", exc)
        os._exit(127)


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


def _write_files(files, err_w):
    """Write the VE's ``files`` from inside it (resolved in its root, as VE root)."""
    for path, data in files:
        try:
            vefiles.replace(path, data, 0o644, durable=False)  # rewritten at every start
        except OSError as exc:
            text = f"cannot write {path}: {exc.strerror}"[:500]
            os.write(err_w, f"{_WARNING}{text}{_WARNING_END}".encode())


def _stdio_on(console):
    """init's stdin, stdout and stderr: the console (boot messages go there), else
    /dev/null."""
    target = console if console is not None else os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(target, fd)
    if target > 2:
        os.close(target)


def _fd_path(fd):
    # Its name in the host's devpts, resolved in the VE's copy of the mount namespace:
    # a bind from the descriptor itself (/proc/self/fd) would name the host's mount,
    # which a mount namespace may not take binds from (EINVAL).
    return None if fd is None else os.ttyname(fd)


def _join_cgroups(files):
    """Move the calling single-threaded process into the VE's cgroups."""
    for path in files:
        with open(path, "w") as handle:
            handle.write("0")


def _report(fd, stage, exc):
    try:
        os.write(fd, f"{stage}: {exc}".encode()[:4000])
    except OSError:
        pass


def _read_line(fd):
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
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

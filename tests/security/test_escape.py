"""Container escapes: what root inside a VE must not be able to do to the host.

Each test starts a real VE and attacks from inside it, with busybox or with
the static escape probe (escape_probe.c, copied in through ``exec``), then
checks the outcome from the host as well.
"""

import ctypes
import errno
import os
import re
import signal
import uuid

import pytest

from ve import Limits, VEConfig
from ve.config import IDMAP_SIZE
from ve.kernel import proc

from tests.engine.conftest import vectl, wait_for

# Linux capability numbers a VE must never hold (include/uapi/linux/capability.h).
FORBIDDEN_CAPS = {
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_PACCT": 20,
    "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_AUDIT_CONTROL": 30,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38, "CAP_BPF": 39,
}
# x86_64 syscall numbers and keyctl constants (linux/keyctl.h).
SYS_FINIT_MODULE, SYS_ADD_KEY, SYS_KEYCTL = 313, 248, 250
KEYCTL_REVOKE, KEYCTL_UNLINK, KEYCTL_READ = 3, 9, 11
KEY_SPEC_SESSION_KEYRING = -3

_libc = ctypes.CDLL(None, use_errno=True)


# -- helpers -------------------------------------------------------------------


def start_ve(engine, veid=101, seccomp_allow=(), **limits):
    """Create and start a busybox VE, wait until its boot script is done; return init's PID."""
    engine.create(VEConfig(veid, f"sec{veid}", "busybox", Limits(**limits),
                           seccomp_allow=seccomp_allow))
    pid = engine.start(veid)
    # Left once rcS is done: init, and where a node watcher gave the VE a console, the
    # console's login loop (its shell and getty).
    settled = 3 if engine._running_init(veid).console else 1
    assert wait_for(lambda: engine.status(veid).nproc == settled), "the VE's rcS did not finish"
    return pid


def sh(engine, veid, script, input=b""):
    """Run a shell snippet in the VE; return (exit code, stdout text, stderr text)."""
    result = engine.exec(veid, ["sh", "-c", script], input=input)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def ok(engine, veid, script):
    """Run a shell snippet that must succeed; return its stdout."""
    code, out, err = sh(engine, veid, script)
    assert code == 0, f"{script!r} failed ({code}): {err}"
    return out


def install_probe(engine, veid, binary):
    """Copy the escape probe into the VE as /bin/probe, through the engine."""
    code, _, err = sh(engine, veid, "cat > /bin/probe && chmod 755 /bin/probe", input=binary)
    assert code == 0, f"cannot install the probe: {err}"


def probe(engine, veid, *args):
    """Run one probe attack in the VE; return (exit code, output lines)."""
    result = engine.exec(veid, ["/bin/probe", *map(str, args)])
    return result.returncode, result.stdout.decode().splitlines()


def blocked_errno(lines, what):
    """Return the errno of the probe line "blocked WHAT: ...", failing if it succeeded."""
    for line in lines:
        assert not line.startswith(f"SUCCEEDED {what}"), f"security hole: {line}"
        match = re.fullmatch(rf"blocked {re.escape(what)}: .* \(errno (\d+)\)", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"probe did not report {what!r}: {lines}")


def status_field(text, name):
    """Return the value of ``name:`` in a /proc/<pid>/status text."""
    return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith(f"{name}:"))


def cap_numbers(hex_mask):
    """Return the capability numbers set in a /proc status mask such as ``000001ffffffffff``."""
    mask = int(hex_mask, 16)
    return {bit for bit in range(64) if mask >> bit & 1}


def host_file(path):
    with open(path) as handle:
        return handle.read()


def pids_in_pid_namespace(init_pid, comm):
    """Host PIDs of processes named ``comm`` in the PID namespace of ``init_pid``."""
    target = os.readlink(f"/proc/{init_pid}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and proc.name(int(entry)) == comm:
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == target:
                    found.append(int(entry))
            except (FileNotFoundError, PermissionError):
                pass  # gone, or a host process we may not inspect (so not a VE's)
    return found


@pytest.fixture
def ve(engine, probe_binary):
    """VE 101 running, with the escape probe installed; return its init's host PID."""
    pid = start_ve(engine)
    install_probe(engine, 101, probe_binary)
    return pid


# -- kernel modules and devices ------------------------------------------------


def test_ve_root_cannot_load_a_kernel_module(engine, ve):
    """VE root cannot load a kernel module: the seccomp filter answers EPERM before the
    kernel looks (a kernel built without modules, like this one, says ENOSYS to host
    root), and the capability is not in the bounding set anyway."""
    code, lines = probe(engine, 101, "module")
    assert code == 0, lines
    assert blocked_errno(lines, "init_module") == errno.EPERM
    assert blocked_errno(lines, "finit_module") == errno.EPERM
    effective = cap_numbers(status_field(ok(engine, 101, "cat /proc/self/status"), "CapEff"))
    assert FORBIDDEN_CAPS["CAP_SYS_MODULE"] not in effective
    code, _, _ = sh(engine, 101, "echo junk > /tmp/evil.ko && insmod /tmp/evil.ko")
    assert code != 0, "busybox insmod succeeded inside the VE"


def test_ve_root_cannot_create_or_mount_the_hosts_block_device(engine, ve):
    """VE root cannot make a node for the host's root disk, nor mount it."""
    root_dev = os.stat("/").st_dev
    major, minor = os.major(root_dev), os.minor(root_dev)
    code, lines = probe(engine, 101, "mknod", "/tmp/hostdisk", major, minor)
    assert code == 0, lines
    assert blocked_errno(lines, "mknod") == errno.EPERM
    # What /proc/mounts names as the VE's root device must not be mountable either.
    source = next(line.split()[0] for line in ok(engine, 101, "cat /proc/mounts").splitlines()
                  if line.split()[1] == "/")
    for script in (f"mkdir -p /mnt && mount {source} /mnt",
                   f"mkdir -p /mnt && mount -t ext4 {source} /mnt"):
        code, _, _ = sh(engine, 101, script)
        assert code != 0, f"{script!r} succeeded inside the VE"
    assert " /mnt " not in ok(engine, 101, "cat /proc/mounts")
    assert ok(engine, 101, "find /dev -type b") == "", "a block device is visible in the VE"


# -- /proc and /sys ------------------------------------------------------------


PROC_SYS_TARGETS = {  # file -> a value that differs from any sane host setting
    "/proc/sys/kernel/sysrq": "438",
    "/proc/sys/vm/drop_caches": "1",
    "/proc/sys/kernel/printk_ratelimit": "77",
    "/proc/sys/vm/swappiness": "37",
    "/proc/sysrq-trigger": "h",
}


@pytest.fixture
def host_proc_sys():
    """Record the host's values of PROC_SYS_TARGETS; restore any that change."""
    before = {}
    for path in PROC_SYS_TARGETS:
        if os.path.exists(path):
            before[path] = host_file(path) if os.access(path, os.R_OK) else None
    yield before
    for path, value in before.items():
        if value is not None and host_file(path) != value:
            with open(path, "w") as handle:
                handle.write(value)


def test_ve_root_cannot_write_proc_sys_or_sysrq_trigger(engine, ve, host_proc_sys):
    """VE root cannot write /proc/sys or /proc/sysrq-trigger; the host's values stay."""
    assert len(host_proc_sys) >= 3, f"too few targets exist on this kernel: {host_proc_sys}"
    for path in host_proc_sys:
        code, _, err = sh(engine, 101, f"echo {PROC_SYS_TARGETS[path]} > {path}")
        assert code != 0, f"VE root wrote {path}"
        assert "Read-only file system" in err or "Permission denied" in err, err
    for path, value in host_proc_sys.items():
        if value is not None:
            assert host_file(path) == value, f"{path} changed on the host"


def test_sys_is_read_only_inside(engine, ve):
    """/sys is mounted read-only: even the VE's own interfaces cannot be changed through it."""
    mounts = [line.split() for line in ok(engine, 101, "cat /proc/mounts").splitlines()]
    sys_options = next(fields[3].split(",") for fields in mounts if fields[1] == "/sys")
    assert "ro" in sys_options
    # VE root may change its own loopback (ip works), but not through sysfs.
    ok(engine, 101, "ip link set lo mtu 65000")
    code, _, err = sh(engine, 101, "echo 1500 > /sys/class/net/lo/mtu")
    assert code != 0 and "Read-only file system" in err, err
    assert ok(engine, 101, "cat /sys/class/net/lo/mtu").strip() == "65000"
    code, _, err = sh(engine, 101, "touch /sys/kernel/vetest")
    assert code != 0 and "Read-only file system" in err, err


def test_leaky_proc_files_are_masked(engine, ve):
    """/proc/kcore, /proc/keys, /proc/timer_list and friends read empty or are absent."""
    assert host_file("/proc/timer_list"), "the host's timer_list should not be empty"
    for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                 "/proc/timer_stats", "/proc/latency_stats"):
        code, out, _ = sh(engine, 101, f"[ ! -e {path} ] || cat {path}")
        assert code == 0 and out == "", f"{path} leaks into the VE: {out[:200]!r}"


# -- processes -----------------------------------------------------------------


def test_ve_sees_only_its_own_processes(engine, ve):
    """ps in the VE lists only the VE's processes and /proc/1 is the VE's own init."""
    rows = [line.split(None, 1) for line in
            ok(engine, 101, "ps -o pid,comm").splitlines()[1:]]
    # vectl-relay: the parent, in the VE, of what vectl exec runs (ve/kernel/attach.py).
    assert {comm for _, comm in rows} <= {"init", "ps", "sh", "vectl-relay"}, rows
    assert ["1", "init"] in rows
    # /proc/1 inside is the process the host knows as the VE's init (its start
    # time read inside counts from the VE's boot: its own time namespace).
    stat = ok(engine, 101, "cat /proc/1/stat")
    with open(f"/proc/{ve}/timens_offsets") as f:
        booted = -int(dict(line.split(None, 1) for line in f)["boottime"].split()[0])
    assert int(stat.rsplit(")", 1)[1].split()[19]) == \
        proc.start_time(ve) - booted * os.sysconf("SC_CLK_TCK")
    assert status_field(ok(engine, 101, "cat /proc/1/status"), "NSpid") == "1"


def test_host_pids_are_unreachable(engine, ve):
    """The VE cannot see, signal or ptrace a host process by its PID number."""
    inside = {int(line.split()[0]) for line in
              ok(engine, 101, "ps -o pid").splitlines()[1:]}
    for pid in (os.getpid(), os.getppid(), ve):
        assert pid not in inside
        code, _, _ = sh(engine, 101, f"[ -e /proc/{pid} ]")
        assert code != 0, f"/proc/{pid} of a host process is visible in the VE"
        code, _, _ = sh(engine, 101, f"kill -0 {pid}")
        assert code != 0, f"the VE can signal host PID {pid}"
        code, lines = probe(engine, 101, "ptrace", pid)
        assert code == 0 and blocked_errno(lines, "ptrace attach") == errno.ESRCH, lines


# -- cgroups -------------------------------------------------------------------


def _cgroup_lines(pid):
    """Map controller list ("memory", "" for v2) -> path from /proc/<pid>/cgroup."""
    return {line.split(":")[1]: line.split(":", 2)[2]
            for line in host_file(f"/proc/{pid}/cgroup").splitlines()}


def test_host_cgroup_files_are_not_in_the_ve(engine, ve):
    """No cgroupfs is mounted in the VE: there is no cgroup.procs to write to."""
    assert ok(engine, 101, "find /sys/fs/cgroup -name cgroup.procs") == ""
    code, _, _ = sh(engine, 101, "echo $$ > /sys/fs/cgroup/memory/cgroup.procs")
    assert code != 0


@pytest.mark.parametrize("fstype, options, controller", [
    ("cgroup", "memory", "memory"),
    ("cgroup", "pids", "pids"),
    ("cgroup2", "", ""),
])
def test_ve_root_cannot_leave_its_cgroup(engine, ve, fstype, options, controller):
    """Mounting a cgroup fs in the VE and joining its root keeps the process in the VE's group."""
    script = f"/bin/probe cgroup {fstype} '{options}' /cgtest > /tmp/cg.out 2>&1 &"
    ok(engine, 101, script)
    assert wait_for(lambda: "ready" in ok(engine, 101, "cat /tmp/cg.out || true")), \
        ok(engine, 101, "cat /tmp/cg.out || true")
    [pid] = pids_in_pid_namespace(ve, "probe")
    try:
        report = ok(engine, 101, "cat /tmp/cg.out")
        assert "SUCCEEDED" not in report, report
        assert engine.cgroups.group_of(pid) == "101"
        assert _cgroup_lines(pid)[controller] == _cgroup_lines(ve)[controller], report
    finally:
        os.kill(pid, signal.SIGKILL)


# -- keys ----------------------------------------------------------------------


def _keyctl(*args):
    return _libc.syscall(ctypes.c_long(SYS_KEYCTL), *[ctypes.c_long(a) for a in args])


@pytest.fixture
def host_key():
    """A secret "user" key in the test process's session keyring; yields (serial, secret)."""
    description = f"vetest-{uuid.uuid4().hex[:8]}".encode()
    secret = f"host-secret-{uuid.uuid4().hex}".encode()
    serial = _libc.syscall(ctypes.c_long(SYS_ADD_KEY), b"user", description, secret,
                           ctypes.c_size_t(len(secret)), ctypes.c_long(KEY_SPEC_SESSION_KEYRING))
    assert serial > 0, f"add_key failed: {os.strerror(ctypes.get_errno())}"
    yield serial, secret, description.decode()
    _keyctl(KEYCTL_REVOKE, serial)
    _keyctl(KEYCTL_UNLINK, serial, KEY_SPEC_SESSION_KEYRING)


def _host_can_read(serial, secret):
    buf = ctypes.create_string_buffer(256)
    size = _libc.syscall(ctypes.c_long(SYS_KEYCTL), ctypes.c_long(KEYCTL_READ),
                         ctypes.c_long(serial), buf, ctypes.c_long(len(buf)))
    return size == len(secret) and buf.raw[:size] == secret


def _assert_key_unreachable(lines, secret, relaxed):
    text = "\n".join(lines)
    assert secret.decode() not in text
    if not relaxed:  # the seccomp filter: no keyring at all
        for what in ("keyctl read host key", "keyctl describe host key",
                     "keyctl read session keyring"):
            assert blocked_errno(lines, what) == errno.ENOSYS
        return
    # relaxed by staff: the VE's own session keyring (joined at start) still hides it
    assert blocked_errno(lines, "keyctl read host key") in (errno.EACCES, errno.ENOKEY)
    assert blocked_errno(lines, "keyctl describe host key") in (errno.EACCES, errno.ENOKEY)
    assert blocked_errno(lines, "host key linked in the session keyring") == errno.ENOENT


@pytest.mark.parametrize("allow", ["", "keyring"])
def test_ve_cannot_read_the_host_keyring(engine, probe_binary, host_key, allow):
    """Neither `vectl exec` commands nor the VE's init inherit the host caller's keyring.

    By default the seccomp filter answers every keyring call with ENOSYS; with
    the keyring relaxed (staff), the VE's own session keyring still hides the host's.
    """
    serial, secret, description = host_key
    assert _host_can_read(serial, secret)  # the key is really there, possessed by us
    start_ve(engine, seccomp_allow=allow)  # started while the test process holds the key
    install_probe(engine, 101, probe_binary)
    code, lines = probe(engine, 101, "keyctl", serial)
    assert code == 0, lines
    _assert_key_unreachable(lines, secret, allow)
    assert description not in ok(engine, 101, "cat /proc/keys")
    # The same from a child of the VE's init: rc.local runs at boot.
    ok(engine, 101, f"printf '#!/bin/sh\\n/bin/probe keyctl {serial} > /keys.out 2>&1\\n'"
                    " > /etc/rc.local && chmod 755 /etc/rc.local")
    engine.restart(101, timeout=5)

    def boot_report():
        text = ok(engine, 101, "cat /keys.out 2>/dev/null || true")
        return text if "keyctl describe" in text else None

    report = wait_for(boot_report)
    assert report, "the boot-time probe did not run"
    _assert_key_unreachable(report.splitlines(), secret, allow)


# -- identity ------------------------------------------------------------------


def _id_ranges(pid):
    """Return [(first host id, count)] of the uid_map and gid_map of ``pid``."""
    ranges = []
    for name in ("uid_map", "gid_map"):
        for line in host_file(f"/proc/{pid}/{name}").splitlines():
            inside, outside, count = map(int, line.split())
            assert inside == 0
            ranges.append((outside, count))
    return ranges


def test_ve_root_is_an_unprivileged_host_uid(engine, ve):
    """The VE's root is host uid VEID*65536: its init and its files belong to that uid."""
    base = 101 * IDMAP_SIZE
    assert _id_ranges(ve) == [(base, IDMAP_SIZE), (base, IDMAP_SIZE)]
    status = host_file(f"/proc/{ve}/status")
    assert status_field(status, "Uid").split() == [str(base)] * 4
    assert status_field(status, "Gid").split() == [str(base)] * 4
    ok(engine, 101, "touch /made-by-ve-root")
    made = os.stat(engine.layout.private(101) / "made-by-ve-root")
    assert (made.st_uid, made.st_gid) == (base, base)
    assert ok(engine, 101, "ls -ln /made-by-ve-root").split()[2:4] == ["0", "0"]


def test_two_ves_have_disjoint_id_ranges(engine):
    """Two VEs map their ids to non-overlapping host ranges, none including host root."""
    ranges = {veid: _id_ranges(start_ve(engine, veid)) for veid in (101, 102)}
    spans = [(first, first + count) for veid in ranges for first, count in set(ranges[veid])]
    assert len(spans) == 2
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert a_end <= b_start and a_start > 0


def test_capability_bounding_set_lacks_host_wide_caps(engine, ve):
    """Neither init nor `vectl exec` processes can hold CAP_SYS_MODULE, CAP_SYS_RAWIO, ..."""
    forbidden = set(FORBIDDEN_CAPS.values())
    init_status = host_file(f"/proc/{ve}/status")
    exec_status = ok(engine, 101, "cat /proc/self/status")
    cli_status = vectl(engine, "exec", 101, "cat", "/proc/self/status").stdout
    for status in (init_status, exec_status, cli_status):
        for field in ("CapBnd", "CapEff", "CapPrm"):
            held = cap_numbers(status_field(status, field)) & forbidden
            assert not held, f"{field} holds {held}"
    assert status_field(exec_status, "NoNewPrivs") == "1"


# -- descriptors ---------------------------------------------------------------


def test_init_holds_no_host_descriptors(engine, ve):
    """The VE's init has only 0, 1 and 2, all on /dev/null."""
    fds = sorted(os.listdir(f"/proc/{ve}/fd"), key=int)
    assert fds == ["0", "1", "2"]
    assert {os.readlink(f"/proc/{ve}/fd/{fd}") for fd in fds} == {"/dev/null"}
    lines = ok(engine, 101, "ls -l /proc/1/fd").splitlines()[1:]
    assert [line.split()[-1] for line in lines] == ["/dev/null"] * 3


@pytest.fixture
def leaked_fd():
    """An inheritable host descriptor in the test process, as a careless caller would have."""
    fd = os.open("/etc/hostname", os.O_RDONLY)
    os.set_inheritable(fd, True)
    yield fd
    os.close(fd)


# ls lists the shell's descriptors from a child process; `exit 0` keeps the
# shell from exec'ing ls in its own place (ls would list its directory fd).
FD_LISTING = "ls -l /proc/$$/fd; exit 0"


def _fd_listing(text):
    """Map fd -> link target ("?" if unreadable) from FD_LISTING output."""
    fds = {}
    for line in text.splitlines()[1:]:
        left, _, target = line.partition(" -> ")
        fds[left.split()[-1]] = target or "?"
    return fds


def test_exec_commands_see_only_their_pipes(engine, ve, leaked_fd):
    """`vectl exec` commands get only stdin/stdout/stderr pipes, never a host descriptor."""
    seen = _fd_listing(ok(engine, 101, FD_LISTING))
    cli = vectl(engine, "exec", 101, "sh", "-c", FD_LISTING, pass_fds=(leaked_fd,)).stdout
    for fds in (seen, _fd_listing(cli)):
        assert sorted(fds) == ["0", "1", "2"], fds
        assert all(target.startswith("pipe:[") for target in fds.values()), fds

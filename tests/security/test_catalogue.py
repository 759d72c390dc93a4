"""The escape and host-damage catalogue: each test attacks from inside a real VE as VE root.

docs/security-catalogue.md lists every class with its test and what stops it
(test_escape.py and test_hostile_ve.py hold the older entries). Attacks run
with busybox or the static escape probe (escape_probe.c); every outcome is
also checked from the host.
"""

import ctypes
import errno
import glob
import hashlib
import os
import socket
import sys
import time
import uuid

import pytest

from ve import syscalls
from ve.config import VEConfig

from tests.engine.conftest import vectl, wait_for
from tests.engine.test_lxcfs import lxcfs, lxcfs_node  # noqa: F401  (fixtures)
from tests.security.test_escape import (host_file, install_probe, ok, probe, sh, start_ve,
                                        blocked_errno, status_field)

_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def ve(engine, probe_binary):
    """VE 101 running, with the escape probe installed; return its init's host PID."""
    pid = start_ve(engine)
    install_probe(engine, 101, probe_binary)
    return pid


def sys_calls(engine, veid, abi, specs):
    """Run raw calls ``specs`` ("NR:ARG:...") on ``abi`` in the VE; return {NR: errno}."""
    code, lines = probe(engine, veid, "sys", abi, *specs)
    assert code == 0, lines
    return {int(line.split()[1].rstrip(":")): int(line.split()[-1]) for line in lines}


# -- the seccomp filter: one class per group of denied calls, on every ABI --------------------

CLASSES = {
    "kernel modules": ("init_module", "finit_module", "delete_module"),
    "kexec": ("kexec_load", "kexec_file_load"),
    "keyring": ("add_key", "request_key", "keyctl"),
    "open_by_handle_at": ("open_by_handle_at",),
    "bpf and perf_event_open": ("bpf", "perf_event_open"),
    "userfaultfd and io_uring": ("userfaultfd", "io_uring_setup", "io_uring_enter",
                                 "io_uring_register"),
    "swap": ("swapon", "swapoff"),
    "clock": ("settimeofday", "clock_settime", "clock_settime64", "stime"),
    "process accounting and syslog": ("acct", "syslog"),
    "port I/O and vm86": ("iopl", "ioperm", "vm86", "vm86old"),
    "obsolete interfaces": ("uselib", "lookup_dcookie", "nfsservctl", "_sysctl"),
}


def _expected(names, abi):
    """{number: errno} of ``names`` on ``abi`` ("64", "32", "x32"; x32 without its bit)."""
    wanted = {}
    for name in names:
        native, i386, err, _ = syscalls.DENIED[name]
        numbers = {"64": [native], "32": [i386],
                   "x32": [native, syscalls.X32_ONLY.get(name)]}[abi]
        wanted.update({number: err for number in numbers if number is not None})
    return wanted


def test_every_class_names_denied_calls():
    named = {name for names in CLASSES.values() for name in names}
    assert named == set(syscalls.DENIED)


@pytest.mark.parametrize("names", list(CLASSES.values()), ids=list(CLASSES))
def test_denied_calls_fail_on_every_abi(engine, ve, names):
    """Native, i386 (int 0x80) and x32 entries all get the filter's errno.

    With zero arguments the kernel itself would answer EFAULT, EINVAL, ENOSYS
    (calls this kernel lacks, every x32 call) or succeed (keyctl
    GET_KEYRING_ID), so the errno seen is the filter's.
    """
    for abi in ("64", "32", "x32"):
        expected = _expected(names, abi)
        seen = sys_calls(engine, 101, abi, [str(nr) for nr in expected])
        assert seen == expected, f"ABI {abi}: {seen} != {expected}"
    status = host_file(f"/proc/{ve}/status")
    assert status_field(status, "Seccomp") == "2"


@pytest.mark.parametrize("watcher", ["off", "auto"])
def test_filter_holds_for_init_exec_and_enter_with_or_without_watcher(
        engine, probe_binary, monkeypatch, watcher):
    """Init, its children and every exec/enter command carry the filter; one per process."""
    monkeypatch.setenv("VE_WATCH", watcher)
    init = start_ve(engine)
    install_probe(engine, 101, probe_binary)
    for text in (host_file(f"/proc/{init}/status"), ok(engine, 101, "cat /proc/self/status"),
                 vectl(engine, "exec", 101, "cat", "/proc/self/status").stdout):
        assert status_field(text, "Seccomp") == "2"
        assert status_field(text, "Seccomp_filters") == "1"
    assert sys_calls(engine, 101, "64", ["250:0:-3:0"]) == {250: errno.ENOSYS}
    # sysinfo works either way (answered by the watcher, or the kernel's)
    assert "Mem:" in ok(engine, 101, "free")


def test_staff_relax_a_ve_with_vectl_set(engine, ve):
    """`vectl set --seccomp-allow keyring` lets the keyring through from the next start;
    calls that only harm the host are refused; `none` restores the full filter."""
    refused = vectl(engine, "set", 101, "--seccomp-allow", "kexec_load", check=False)
    assert refused.returncode != 0 and "cannot be allowed" in refused.stderr
    refused = vectl(engine, "set", 101, "--seccomp-allow", "everything", check=False)
    assert refused.returncode != 0 and "unknown" in refused.stderr
    vectl(engine, "set", 101, "--seccomp-allow", "keyring,io_uring")
    assert engine.config(101).seccomp_allow == ("add_key", "io_uring_enter", "io_uring_register",
                                                "io_uring_setup", "keyctl", "request_key")
    engine.restart(101, timeout=5)
    seen = sys_calls(engine, 101, "64", ["250:0:-3:0", "425:0:0", "246"])
    assert seen == {250: 0, 425: errno.EFAULT, 246: errno.EPERM}
    vectl(engine, "set", 101, "--seccomp-allow", "none")
    engine.restart(101, timeout=5)
    assert sys_calls(engine, 101, "64", ["250:0:-3:0"]) == {250: errno.ENOSYS}


def _handle_of(path):
    """The FILEID_INO32_GEN file handle of ``path`` (hex), as name_to_handle_at gives it."""
    buf = ctypes.create_string_buffer(8 + 128)
    ctypes.c_uint.from_buffer(buf).value = 128
    mount_id = ctypes.c_int()
    rc = _libc.syscall(ctypes.c_long(303), ctypes.c_int(-100), path.encode(), buf,
                       ctypes.byref(mount_id), ctypes.c_int(0))
    assert rc == 0, os.strerror(ctypes.get_errno())
    size = ctypes.c_uint.from_buffer(buf).value
    kind = ctypes.c_int.from_buffer(buf, 4).value
    return kind, buf.raw[8:8 + size].hex()


def test_open_by_handle_at_cannot_reach_host_files_even_from_a_privileged_ve(
        engine, probe_binary, tmp_path):
    """Shocker (2014): a handle of a host directory on the VE's filesystem, opened from
    inside. A privileged VE (no user namespace, staff only) keeps CAP_DAC_READ_SEARCH:
    only the seccomp filter stops it there."""
    engine.create(VEConfig(101, "sec101", "busybox", privileged=True, layout="dir"))
    engine.start(101)
    assert wait_for(lambda: engine.status(101).nproc == 1)
    install_probe(engine, 101, probe_binary)
    secret = tmp_path / f"host-only-{uuid.uuid4().hex[:8]}"
    secret.mkdir()
    (secret / "marker").write_text("host")
    kind, handle = _handle_of(str(secret))
    if kind != 1:  # the probe builds FILEID_INO32_GEN handles (ext4, tmpfs)
        pytest.fail(f"this filesystem's handles are of type {kind}, not 1")
    code, lines = probe(engine, 101, "handle", handle)
    assert "entry marker" not in lines
    assert blocked_errno(lines, "open_by_handle_at") == errno.EPERM
    assert code == 0


# -- mounts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fstype", ["debugfs", "tracefs", "securityfs", "configfs", "pstore",
                                    "efivarfs", "fusectl"])
def test_kernel_debug_filesystems_cannot_be_mounted(engine, ve, fstype):
    """Filesystems without FS_USERNS_MOUNT are refused to VE root (user namespace)."""
    code, _, err = sh(engine, 101, f"mkdir -p /mnt/x && mount -t {fstype} none /mnt/x")
    assert code != 0, f"{fstype} mounted in the VE"
    assert " /mnt/x " not in ok(engine, 101, "cat /proc/mounts")


def test_a_new_sysfs_or_bpffs_gives_no_host_control(engine, ve):
    """sysfs may be mounted again (the VE's network namespace), but host knobs stay
    read-only to VE root (their owner, host root, is unmapped); bpffs, if the kernel
    lets VE root mount it, is useless without bpf(2), which the filter denies."""
    knob = "/sys/kernel/mm/transparent_hugepage/enabled"
    before = host_file(knob)
    code, _, err = sh(engine, 101, "mkdir -p /mnt/sys && mount -t sysfs sysfs /mnt/sys && echo"
                                   " never > /mnt/sys/kernel/mm/transparent_hugepage/enabled")
    assert code != 0, "VE root wrote a host sysfs knob"
    assert host_file(knob) == before
    sh(engine, 101, "umount /mnt/sys")
    code, _, _ = sh(engine, 101, "mkdir -p /mnt/bpf && mount -t bpf bpf /mnt/bpf")
    assert sys_calls(engine, 101, "64", ["321:0:0:0"]) == {321: errno.EPERM}  # BPF_MAP_CREATE
    if code == 0:
        assert ok(engine, 101, "ls -A /mnt/bpf") == ""


def test_cgroup_release_agent_cannot_be_set(engine, ve):
    """CVE-2022-0492: VE root mounts a v1 hierarchy and writes release_agent. Its cgroup
    namespace shows only its own group (no release_agent file at the root), the kernel
    refuses release_agent to anyone without CAP_SYS_ADMIN over the host, and a new named
    hierarchy cannot be created from a user namespace."""
    agents = {path: host_file(path) for path in
              (f"/sys/fs/cgroup/{c}/release_agent" for c in ("memory", "pids", "cpu"))
              if os.path.exists(path)}
    assert agents, "no v1 hierarchy with a release_agent on this host"
    for controller in ("memory", "pids"):
        script = (f"mkdir -p /mnt/cg && mount -t cgroup -o {controller} cgroup /mnt/cg && "
                  "mkdir -p /mnt/cg/x && echo 1 > /mnt/cg/x/notify_on_release; "
                  "echo /evil > /mnt/cg/release_agent; r=$?; umount /mnt/cg; exit $r")
        code, _, _ = sh(engine, 101, script)
        assert code != 0, f"release_agent of {controller} written"
    code, _, _ = sh(engine, 101, "mkdir -p /mnt/cn && mount -t cgroup -o none,name=vetest "
                                 "cgroup /mnt/cn")
    assert code != 0, "a new cgroup hierarchy was created from inside"
    assert {path: host_file(path) for path in agents} == agents


# -- masks and /proc, /sys ---------------------------------------------------------------------


def test_vmcoreinfo_is_masked(engine, ve):
    """/sys/kernel/vmcoreinfo (the physical address of the kernel's crash notes) reads empty."""
    assert host_file("/sys/kernel/vmcoreinfo").strip(), "the host's vmcoreinfo is empty"
    assert ok(engine, 101, "cat /sys/kernel/vmcoreinfo") == ""


def test_unmounted_masks_still_protect_the_files_behind(engine, ve):
    """VE root may unmount the masks and remount /proc/sys read-write (they are its own
    mounts, not locked ones), but the files behind belong to host root, unmapped in the
    VE: timer_list stays unreadable and host-wide sysctls unwritable."""
    swappiness = host_file("/proc/sys/vm/swappiness")
    ok(engine, 101, "umount /proc/timer_list && umount /proc/keys")
    code, _, err = sh(engine, 101, "cat /proc/timer_list")
    assert code != 0 and "Permission denied" in err
    ok(engine, 101, "mount -o remount,rw /proc/sys")
    code, _, err = sh(engine, 101, "echo 7 > /proc/sys/vm/swappiness")
    assert code != 0 and "Permission denied" in err
    code, _, err = sh(engine, 101, "mount -o remount,rw /sys; echo 1 > /sys/kernel/profiling")
    assert code != 0
    assert host_file("/proc/sys/vm/swappiness") == swappiness


def test_unmounted_sysfs_masks_leave_the_memory_layout_closed(engine, ve):
    """vmcoreinfo and the firmware's memory map are world-readable from the kernel; the
    engine closes them to others before a start, so a VE that unmounts their masks
    still cannot read where the host's physical memory and crash notes are."""
    assert host_file("/sys/kernel/vmcoreinfo").strip()  # the host (root) still reads it
    ok(engine, 101, "umount /sys/kernel/vmcoreinfo && umount /sys/firmware")
    code, _, err = sh(engine, 101, "cat /sys/kernel/vmcoreinfo")
    assert code != 0 and "Permission denied" in err, err
    memmap = sorted(glob.glob("/sys/firmware/memmap/*/start"))
    assert memmap, "this host has no firmware memory map to protect"
    inside = "/sys/firmware/memmap/" + memmap[0].split("/")[-2] + "/start"
    code, out, err = sh(engine, 101, f"cat {inside}")
    assert code != 0 and "Permission denied" in err, (out, err)


# -- time, names, power, swap ------------------------------------------------------------------


def test_ve_cannot_set_the_clock(engine, ve):
    """date -s and adjtimex inside fail (CAP_SYS_TIME is the host's, and the filter);
    the host's clock does not jump."""
    before = time.time()
    _, _, err = sh(engine, 101, "date -s '2001-02-03 04:05:06'")  # busybox exits 0 anyway
    assert "can't set date: Operation not permitted" in err, err
    code, _, _ = sh(engine, 101, "adjtimex -f 1000 -o 100000")
    assert code != 0, "adjtimex changed the clock"
    assert abs(time.time() - before) < 30
    assert time.gmtime().tm_year > 2001


def test_hostname_stays_in_the_ve(engine, ve):
    """sethostname changes the VE's UTS namespace only."""
    host = socket.gethostname()
    ok(engine, 101, "hostname vetest-evil")
    assert ok(engine, 101, "hostname").strip() == "vetest-evil"
    assert socket.gethostname() == host


def test_swapon_is_refused(engine, ve):
    """A VE cannot add swap to the host (the filter, and CAP_SYS_ADMIN over the host)."""
    swaps = host_file("/proc/swaps")
    ok(engine, 101, "dd if=/dev/zero of=/swapfile bs=1M count=8 2>/dev/null && mkswap /swapfile")
    code, _, _ = sh(engine, 101, "swapon /swapfile")
    assert code != 0
    assert host_file("/proc/swaps") == swaps


def test_reboot_from_inside_ends_only_the_ve(engine, ve):
    """reboot(2) with POWER_OFF from a VE process ends the VE's PID namespace, nothing else."""
    boot_id = host_file("/proc/sys/kernel/random/boot_id")
    engine.exec(101, ["/bin/probe", "sys", "64", "169:0xfee1dead:672274793:0x4321fedc"])
    assert wait_for(lambda: engine.status(101).state == "stopped", 10)
    assert host_file("/proc/sys/kernel/random/boot_id") == boot_id
    assert not os.path.exists(f"/proc/{ve}") or "zombie" in host_file(f"/proc/{ve}/status")


# -- IPC ---------------------------------------------------------------------------------------


@pytest.fixture
def host_ipc():
    """A System V shared memory segment and an abstract unix socket of the host."""
    key = int.from_bytes(os.urandom(3), "big") | 0x5E000000
    shm = _libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), ctypes.c_int(0o1666))
    assert shm >= 0, os.strerror(ctypes.get_errno())
    name = f"vetest-{uuid.uuid4().hex[:8]}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(1)
    yield key, name
    server.close()
    _libc.shmctl(ctypes.c_int(shm), ctypes.c_int(0), None)  # IPC_RMID


def test_host_shared_memory_and_abstract_sockets_are_out_of_reach(engine, ve, host_ipc):
    """The IPC namespace hides the host's segments; the network namespace its abstract
    unix sockets."""
    key, name = host_ipc
    code, lines = probe(engine, 101, "shm", key)
    assert code == 0 and blocked_errno(lines, "shmget host segment") == errno.ENOENT
    code, lines = probe(engine, 101, "abstract", name)
    assert code == 0
    assert blocked_errno(lines, "connect to the host's abstract socket") == errno.ECONNREFUSED


# -- resource exhaustion -----------------------------------------------------------------------


def test_fork_bomb_stops_at_numproc(engine, probe_binary):
    """A fork bomb gets EAGAIN at the VE's numproc (pids.max); the host still forks."""
    start_ve(engine, numproc=64)
    _, _, err = sh(engine, 101, "i=0; while sleep 300 & do i=$((i+1)); "
                                "[ $i -ge 500 ] && break; done; echo $i")
    assert "can't fork" in err, err
    assert 32 < engine.status(101).nproc <= 64
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)


def test_memory_hog_is_killed_inside_the_ve(engine, probe_binary):
    """Touching 256 MiB in a 32 MiB VE without swap ends in the VE's own OOM kill."""
    start_ve(engine, ram="32M", swap=0)
    install_probe(engine, 101, probe_binary)
    result = engine.exec(101, ["/bin/probe", "hog", "256"])
    assert b"survived" not in result.stdout
    assert result.returncode in (137, 0), result  # killed, or mmap refused
    assert engine.status(101).oom_kills >= 1 or b"blocked allocate" in result.stdout
    assert engine.status(101).state == "running"


def test_disk_and_inode_fill_stop_at_the_ves_limits(engine, probe_binary):
    """Filling the disk or the inode table ends in ENOSPC inside the VE's own image."""
    start_ve(engine, diskspace="64M", diskinodes=2048)
    host_free = os.statvfs(engine.layout.root).f_bavail * os.statvfs(engine.layout.root).f_frsize
    code, _, err = sh(engine, 101, "dd if=/dev/zero of=/fill bs=1M count=256")
    assert code != 0 and "No space left" in err
    size = int(ok(engine, 101, "stat -c %s /fill"))
    assert size <= 64 << 20
    ok(engine, 101, "rm /fill")
    code, out, err = sh(engine, 101, "mkdir /many && cd /many && i=0; "
                                     "while touch f$i 2>/dev/null; do i=$((i+1)); "
                                     "[ $i -ge 5000 ] && break; done; echo $i")
    assert int(out.split()[-1]) < 4096  # 2048 rounded up to whole inode tables
    st = os.statvfs(engine.layout.root)
    assert host_free - st.f_bavail * st.f_frsize < 80 << 20


# -- processes: exe, fds and cwd of exec and enter ---------------------------------------------


def test_exec_and_enter_leak_no_cwd_or_descriptor(engine, ve, tmp_path, monkeypatch):
    """CVE-2024-21626: the caller's working directory and open descriptors (a host
    directory here) must not reach an exec or enter command; its cwd is the VE's /."""
    host_dir = tmp_path / "host-cwd"
    host_dir.mkdir()
    (host_dir / "host-marker").write_text("x")
    leaked = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(leaked, True)
    monkeypatch.chdir(host_dir)
    script = ("readlink /proc/self/cwd; ls /proc/self/cwd/; ls -l /proc/self/fd/; "
              "ls /proc/self/fd/*/ 2>/dev/null; exit 0")
    try:
        out = ok(engine, 101, script)
        cli = vectl(engine, "exec", 101, "sh", "-c", script, pass_fds=(leaked,),
                    cwd=host_dir).stdout
        read_end, write_end = os.pipe()
        stdin_r, stdin_w = os.pipe()
        os.close(stdin_w)
        try:
            code = engine.enter(101, ["/bin/sh", "-c", script], stdin_fd=stdin_r,
                                stdout_fd=write_end)
        finally:
            os.close(write_end)
            os.close(stdin_r)
        with os.fdopen(read_end, "rb") as f:
            entered = f.read().decode(errors="replace")
        assert code == 0, entered
    finally:
        os.close(leaked)
    for text in (out, cli, entered):
        assert text.splitlines()[0].strip() == "/", text
        assert "host-marker" not in text and str(host_dir) not in text, text


def test_ve_cannot_reach_host_binaries_through_proc_exe(engine, ve):
    """CVE-2019-5736: while exec commands start, a VE process watches /proc for a process
    whose /proc/PID/exe is a host binary (the helper's child runs host code until it
    execs) and opens it for writing. The child is not dumpable (its uid changed to VE
    root's), so /proc/PID/exe is refused; and the host's files belong to host root,
    unmapped in the VE, so no write could succeed anyway."""
    python = os.path.realpath(sys.executable)
    digest = hashlib.sha256(open(python, "rb").read()).hexdigest()
    ok(engine, 101, "printf '#!/proc/self/exe\\n' > /bin/evil && chmod 755 /bin/evil")
    ok(engine, 101, "/bin/probe exewatch 8 > /tmp/exe.out 2>&1 &")
    for _ in range(40):
        engine.exec(101, ["/bin/true"])
        engine.exec(101, ["/bin/evil"])
    assert wait_for(lambda: "done" in ok(engine, 101, "cat /tmp/exe.out"), 15)
    report = ok(engine, 101, "cat /tmp/exe.out")
    assert "SUCCEEDED" not in report and "reached 0 host binaries" in report, report
    assert hashlib.sha256(open(python, "rb").read()).hexdigest() == digest
    seen = int(report.split("seen ")[1].split()[0])
    assert seen >= 40, report  # it did watch the exec'd processes come and go


# -- what /proc tells of the host --------------------------------------------------------------


def test_loadavg_counts_only_the_ves_threads_under_lxcfs(engine, probe_binary, lxcfs):
    """/proc/loadavg's "running/total" field counts the host's threads in the kernel's
    file; LXCFS (the node's, bound over it at start) counts the VE's own."""
    start_ve(engine)
    host_total = int(host_file("/proc/loadavg").split()[3].split("/")[1])
    assert host_total > 50, "the host runs too few threads to tell"
    fields = ok(engine, 101, "cat /proc/loadavg").split()
    total = int(fields[3].split("/")[1])
    assert total <= 10, f"the VE sees {total} threads: the host's ({host_total})"


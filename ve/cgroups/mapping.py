"""Translate ``Limits`` into cgroup files: pure functions, no I/O.

Each ``*_files`` function returns an ordered list of ``(filename, value)``
pairs to write into a VE's group, in an order the kernel accepts.

=================  ===========================================  ==========================
Limits field       cgroup v1                                    cgroup v2
=================  ===========================================  ==========================
ram (bytes)        memory.limit_in_bytes = ram                  memory.max = ram
swap (bytes)       memory.memsw.limit_in_bytes = ram + swap     memory.swap.max = swap
cpuunits 8..500k   cpu.shares = units*1024/1000 in [2, 262144]  cpu.weight = units/10
                                                                in [1, 10000]
cpulimit (% CPU)   cpu.cfs_period_us = 100000,                  cpu.max = "QUOTA 100000"
                   cpu.cfs_quota_us = cpulimit*1000 or -1       or "max 100000"
cpus (0 = all)     cpuset.cpus = first N of the parent's        same
                   effective CPUs
numproc            pids.max                                     pids.max
readbps, writebps  blkio.throttle.{read,write}_bps_device       io.max rbps= wbps=
readiops, ...      blkio.throttle.{read,write}_iops_device      io.max riops= wiops=
ioweight 10..1000  blkio.bfq.weight (BFQ groups only)           io.weight = weight*10
(security)         devices.deny a + allow list (DEVICE_RULES)   none (BPF, not files)
=================  ===========================================  ==========================

OpenVZ's cpuunits scale has 1000 as "normal"; the kernel's normal is 1024
shares (v1) or weight 100 (v2), so both conversions keep the ratios between
VEs. Divisions round half up. Asking for more CPUs than the parent has gives
all of them.

v1 requires memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every
moment, so a live change writes memsw first when memsw grows and the RAM
limit first when it shrinks; either order is valid against the current values.

The inverse direction lives here too: ``proc_cgroup_paths`` and ``ve_name``
turn a ``/proc/<pid>/cgroup`` text into the VE that holds the process.
"""

CFS_PERIOD_US = 100000

# Character devices a VE may use (rwm = read, write, mknod); everything else is denied.
DEVICE_RULES = (
    "c 1:3 rwm",    # null
    "c 1:5 rwm",    # zero
    "c 1:7 rwm",    # full
    "c 1:8 rwm",    # random
    "c 1:9 rwm",    # urandom
    "c 5:0 rwm",    # tty
    "c 5:1 rwm",    # console
    "c 5:2 rwm",    # ptmx
    "c 136:* rwm",  # pts
)


def controller_of(filename):
    """Return the controller a cgroup file belongs to (``memory.max`` -> ``memory``)."""
    return filename.split(".", 1)[0]


def shares(cpuunits):
    """Return v1 ``cpu.shares`` for OpenVZ ``cpuunits``."""
    return min(max((cpuunits * 1024 + 500) // 1000, 2), 262144)


def weight(cpuunits):
    """Return v2 ``cpu.weight`` for OpenVZ ``cpuunits``."""
    return min(max((cpuunits + 5) // 10, 1), 10000)


def parse_cpulist(text):
    """Parse a kernel CPU list such as ``0-3,8`` into a sorted list of ints."""
    cpus = set()
    for part in filter(None, text.strip().split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return sorted(cpus)


def format_cpulist(cpus):
    """Format CPU numbers as a kernel CPU list (ranges joined by commas)."""
    ranges, cpus = [], sorted(cpus)
    for cpu in cpus:
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def pick_cpus(count, parent_cpus):
    """Return the first ``count`` CPUs of ``parent_cpus`` (0 or too many = all)."""
    cpus = parse_cpulist(parent_cpus)
    return format_cpulist(cpus[:count] if count else cpus)


def v1_memory(ram, swap, current_memsw=None):
    """Return the two v1 memory writes in an order valid against ``current_memsw``.

    ``current_memsw`` is the memsw limit now in force (None for a new group,
    whose limits are unlimited).
    """
    memory = ("memory.limit_in_bytes", ram)
    memsw = ("memory.memsw.limit_in_bytes", ram + swap)
    growing = current_memsw is not None and ram + swap >= current_memsw
    return [memsw, memory] if growing else [memory, memsw]


def v1_files(limits, parent_cpus, current_memsw=None):
    """Return the v1 limit files for ``limits`` (devices are separate: ``v1_devices``)."""
    quota = limits.cpulimit * 1000 if limits.cpulimit else -1
    return v1_memory(limits.ram, limits.swap, current_memsw) + [
        ("cpu.shares", shares(limits.cpuunits)),
        ("cpu.cfs_period_us", CFS_PERIOD_US),
        ("cpu.cfs_quota_us", quota),
        ("cpuset.cpus", pick_cpus(limits.cpus, parent_cpus)),
        ("pids.max", limits.numproc),
    ]


def v1_devices():
    """Return the writes that deny every device, then allow ``DEVICE_RULES``."""
    return [("devices.deny", "a")] + [("devices.allow", rule) for rule in DEVICE_RULES]


def v2_files(limits, parent_cpus):
    """Return the v2 limit files for ``limits``."""
    quota = limits.cpulimit * 1000 if limits.cpulimit else "max"
    return [
        ("memory.max", limits.ram),
        ("memory.swap.max", limits.swap),
        ("cpu.weight", weight(limits.cpuunits)),
        ("cpu.max", f"{quota} {CFS_PERIOD_US}"),
        ("cpuset.cpus", pick_cpus(limits.cpus, parent_cpus)),
        ("pids.max", limits.numproc),
    ]


DEFAULT_BFQ_WEIGHT, DEFAULT_IO_WEIGHT = 100, 100  # the kernel's own defaults


def v1_io_files(limits, device, reset_weight=False):
    """v1 blkio writes for the VE's disk ``device`` ("MAJ:MIN"); 0 lifts a cap.

    The weight goes to BFQ's per-group weight, the only v1 weight kernels
    since 5.0 have (CFQ is gone), and only where BFQ group scheduling is built.
    ``reset_weight``: a weight of 0 writes the kernel's default back (lifting one).
    """
    files = [("blkio.throttle.read_bps_device", f"{device} {limits.readbps}"),
             ("blkio.throttle.write_bps_device", f"{device} {limits.writebps}"),
             ("blkio.throttle.read_iops_device", f"{device} {limits.readiops}"),
             ("blkio.throttle.write_iops_device", f"{device} {limits.writeiops}")]
    if limits.ioweight or reset_weight:
        files.append(("blkio.bfq.weight", limits.ioweight or DEFAULT_BFQ_WEIGHT))
    return files


def v2_io_files(limits, device, reset_weight=False):
    """v2 io writes for ``device``: io.max caps ("max" lifts one) and the weight
    (io.weight, from iocost or BFQ's io.bfq.weight; 10..1000 maps to 1..10000 x 10)."""
    caps = " ".join(f"{key}={value or 'max'}" for key, value in (
        ("rbps", limits.readbps), ("wbps", limits.writebps),
        ("riops", limits.readiops), ("wiops", limits.writeiops)))
    files = [("io.max", f"{device} {caps}")]
    if limits.ioweight or reset_weight:
        files.append(("io.weight", f"default {limits.ioweight * 10 or DEFAULT_IO_WEIGHT}"))
    return files


def v1_blkio_totals(text):
    """(read, write) summed over devices from a blkio.throttle.io_service_* file."""
    read = write = 0
    for fields in map(str.split, text.splitlines()):
        if len(fields) == 3 and fields[1] in ("Read", "Write") and fields[2].isdigit():
            if fields[1] == "Read":
                read += int(fields[2])
            else:
                write += int(fields[2])
    return read, write


def v2_io_totals(text):
    """(rbytes, wbytes, rios, wios) summed over devices from an io.stat file."""
    totals = dict.fromkeys(("rbytes", "wbytes", "rios", "wios"), 0)
    for line in text.splitlines():
        for pair in line.split()[1:]:
            key, _, value = pair.partition("=")
            if key in totals and value.isdigit():
                totals[key] += int(value)
    return totals["rbytes"], totals["wbytes"], totals["rios"], totals["wios"]


def proc_cgroup_paths(text):
    """Map each controller of a ``/proc/<pid>/cgroup`` text to its group path.

    v1 lines look like ``4:cpu,cpuacct:/ve/101``; the v2 line ``0::/ve/101``
    is returned under the key ``""``.
    """
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths.setdefault(controller, parts[2])
    return paths


def ve_name(path, parent):
    """Return ``NAME`` if ``path`` is ``/<parent>/NAME[/...]``, else None."""
    prefix = f"/{parent.strip('/')}/"
    if not path or not path.startswith(prefix):
        return None
    return path[len(prefix):].split("/", 1)[0] or None

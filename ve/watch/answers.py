"""What a VE's sysinfo(2) answers: its own RAM, swap, processes, uptime and load.

The figures agree with what LXCFS serves in the VE's /proc (MemTotal is the
RAM limit, free is the limit minus what the VE's cgroup uses, swap is its
swap limit and use), so busybox ``free`` (sysinfo) and procps ``free``
(/proc/meminfo) print the same. Load averages are the VE's own, computed
like the kernel's from its runnable processes every five seconds, from the
first time the VE asks (as LXCFS does for /proc/loadavg).
"""

import math
import os
import time

from ..errors import VEError
from ..kernel import seccomp

LOAD_INTERVAL = 5.0
_DECAY = tuple(math.exp(-LOAD_INTERVAL / (minutes * 60)) for minutes in (1, 5, 15))
_HOST_REFRESH = 10.0


class Answers:
    """Computes sysinfo answers for the VEs of one engine."""

    def __init__(self, engine):
        self.engine = engine
        self.loads = {}  # veid -> [load1, load5, load15]
        self.limits = {}  # veid -> (conf file stamp, (ram, swap))
        self.next_sample = 0.0
        self._host = (0.0, {})
        self.tick = os.sysconf("SC_CLK_TCK")

    def sysinfo(self, veid, init_start_time):
        """The packed ``struct sysinfo`` for VE ``veid``, or None if it cannot be read."""
        try:
            ram, swap = self._limits(veid)
            memory, swap_used, processes = self.engine.cgroups.footprint(str(veid))
        except (OSError, VEError):
            return None
        host = self._host_memory()
        total = min(ram, host.get("MemTotal", ram))
        swap_total = min(swap, host.get("SwapTotal", 0))
        uptime = max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - init_start_time / self.tick)
        loads = self.loads.setdefault(veid, [0.0, 0.0, 0.0])
        return seccomp.sysinfo_bytes(
            uptime, loads, total, max(total - memory, 0), 0, 0, swap_total,
            max(swap_total - swap_used, 0), processes)

    def _limits(self, veid):
        """(RAM, swap) limits of the VE, from its config, parsed again only when it changed
        (a live `set` rewrites it: the next call answers with the new limits)."""
        path = self.engine.layout.conf(veid)
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self.limits.get(veid)
        if cached is None or cached[0] != stamp:
            limits = self.engine.config(veid).limits
            cached = self.limits[veid] = (stamp, (limits.ram, limits.swap))
        return cached[1]

    def sample_loads(self):
        """Fold each tracked VE's runnable processes into its load averages (every 5 s)."""
        now = time.monotonic()
        if now < self.next_sample:
            return
        self.next_sample = now + LOAD_INTERVAL
        for veid, loads in list(self.loads.items()):
            try:
                active = _runnable(self.engine.cgroups.pids(str(veid)))
            except OSError:
                del self.loads[veid]  # stopped: forget it until it asks again
                continue
            for index, decay in enumerate(_DECAY):
                loads[index] = loads[index] * decay + active * (1 - decay)

    def forget(self, veid):
        self.loads.pop(veid, None)
        self.limits.pop(veid, None)

    def _host_memory(self):
        read_at, values = self._host
        if time.monotonic() - read_at > _HOST_REFRESH:
            values = {}
            with open("/proc/meminfo") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("MemTotal", "SwapTotal"):
                        values[key] = int(rest.split()[0]) * 1024
            self._host = (time.monotonic(), values)
        return values


def _runnable(pids):
    """How many of ``pids`` run or wait on the CPU or in uninterruptible sleep (R, D)."""
    count = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        state = raw[raw.rindex(b")") + 2:raw.rindex(b")") + 3]
        count += state in (b"R", b"D")
    return count

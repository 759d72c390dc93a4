"""One cheap look at everything a node's VEs use, for usage graphs and reports.

``Engine.sample()`` reads, for every VE, its cgroup counters (CPU time, RAM
in use apart from reclaimable file cache, that cache, swap, processes, limit
hits, OOM kills), its block I/O (its image's loop device), its disk figures
(statfs of a mounted image, else the figures saved at its last unmount) and
its traffic totals and, for a routed VE with a conntrack limit, its
tracked connections and the new ones the limit refused; its network
devices and those deleted over its cap (``numnetif``); plus the node's own
totals. All network links come from
one netlink dump per host namespace, not one per VE. Counters are cumulative
(CPU time, bytes, ops, hits) since the VE started; the dashboard turns them
into rates and notices resets (a restart makes a new cgroup and attaches a
new loop device).

Directory-layout VEs get no disk figures here: counting their files is a
walk of the tree, far too dear for every sample (``Engine.disk_usage`` does
it on demand).
"""

import os
import time

from .. import net
from ..cgroups.base import IO_FIELDS
from ..config import DIRECTORY
from ..errors import NotFound
from ..kernel import netns
from .query import RUNNING, STOPPED

VE_FIELDS = ("veid", "state", "cpu_ns", "ram_bytes", "ram_cache_bytes", "ram_limit",
             "swap_bytes", "processes",
             "memory_failcnt", "oom_kills", "disk_used", "disk_total", "inodes_used",
             "inodes_total", "rx_bytes", "tx_bytes", "rx_packets", "tx_packets",
             "io_read_bytes", "io_write_bytes", "io_read_ops", "io_write_ops",
             "conntrack", "conntrack_refused", "netif", "netif_refused")


class SamplingMixin:
    """``sample()`` of the Engine (needs layout, cgroups and the query helpers)."""

    def sample(self):
        """{"time": epoch seconds, "node": {...}, "ves": [{VE_FIELDS...}, ...]}.

        Missing figures are None (a stopped VE's CPU, a dir-layout VE's disk,
        a figure that cannot be read here): never a 0 that was not measured.
        """
        taken = time.time()
        configs = []
        for veid in self.layout.veids():
            cfg = self._read_config(veid, missing_ok=True)
            if cfg is not None:
                configs.append(cfg)
        links = _LinkDumps()
        ves = []
        for cfg in configs:
            try:
                ves.append(self._sample_one(cfg, links))
            except NotFound:
                continue  # destroyed while we looked
        return {"time": taken, "node": node_totals(str(self.layout.root)), "ves": ves}

    def _sample_one(self, cfg, links):
        row = dict.fromkeys(VE_FIELDS)
        row.update(veid=cfg.veid, state=STOPPED, ram_limit=cfg.limits.ram)
        record = self._running_init(cfg.veid)
        if record is not None:
            try:
                use = self.cgroups.usage(str(cfg.veid))
            except OSError:
                use = None  # stopped between the two looks
            if use is not None:
                # RAM: the working set; the inactive file cache the kernel
                # reclaims first is its own figure (the two add up to the cgroup's).
                cache = min(use.memory_reclaimable, use.memory)
                row.update(state=RUNNING, cpu_ns=use.cpu_ns, ram_bytes=use.memory - cache,
                           ram_cache_bytes=cache, swap_bytes=use.swap, processes=use.processes,
                           memory_failcnt=use.memory_failcnt, oom_kills=use.oom_kills)
                row.update(zip(IO_FIELDS, self._io_counters(cfg, use)))
            row.update(self.netif_use(cfg, record))
        if cfg.layout != DIRECTORY:
            from ..storage import image
            try:
                disk = image.usage(self.layout.image(cfg.veid), self._image_at(cfg))
                row.update(disk_used=disk.space_used, disk_total=disk.space_total,
                           inodes_used=disk.inodes_used, inodes_total=disk.inodes_total)
            except OSError:
                pass  # no figures yet: None
        from ..net import counters
        path = self.layout.counters(cfg.veid)
        if row["state"] == RUNNING and net.has_network(cfg):
            link = links.get(record, net.host_ifname(cfg.veid))
            row.update(dict.fromkeys(counters.FIELDS) if link is UNREACHABLE
                       else counters.total(path, link))
            if link is not UNREACHABLE:
                row.update(self.conntrack_use(cfg))
        else:
            row.update(counters.saved(path))
        return row

    def _io_counters(self, cfg, use):
        """Block I/O of the running VE since it started, or Nones where unknown.

        An image VE: its own loop device's statistics, which count every
        write that reaches its disk, writeback included. A directory VE: its
        cgroup's counters on v2; on v1 those count only on devices that ever
        had a throttle rule, so they are unknown there.
        """
        if cfg.layout != DIRECTORY:
            from ..storage import image
            counted = image.io_counters(self.layout.image(cfg.veid))
            return counted if counted is not None else (None,) * len(IO_FIELDS)
        if self.cgroups.version == 2:
            return tuple(getattr(use, field) for field in IO_FIELDS)
        return (None,) * len(IO_FIELDS)


UNREACHABLE = object()


class _LinkDumps:
    """Host-side links by namespace: one netlink dump per namespace VEs run from."""

    def __init__(self):
        self.dumps = {}

    def get(self, record, ifname):
        """The link ``ifname`` in the host namespace of ``record``'s VE (None if
        absent), or UNREACHABLE if that namespace is out of reach."""
        path = netns.path_of(record.netns)
        if path is None:
            return UNREACHABLE
        if path not in self.dumps:
            self.dumps[path] = _links(path)
        return self.dumps[path].get(ifname)


def _links(path):
    """Every link of the network namespace at ``path`` by name, from one dump."""
    from pyroute2 import IPRoute
    if path == netns.OWN:
        ipr = IPRoute()
    else:
        with netns.entered(path):
            ipr = IPRoute()
    with ipr:
        return {link.get_attr("IFLA_IFNAME"): link for link in ipr.get_links()}


def node_totals(ve_root):
    """The node's own CPU time, memory, swap, load and disk where VEs live."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    jiffies = [int(v) for v in fields]
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(jiffies) - jiffies[3] - (jiffies[4] if len(jiffies) > 4 else 0)  # not idle/iowait
    memory = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            memory[key] = int(value.split()[0]) * 1024
    st = os.statvfs(ve_root)
    return {"cpu_busy_ns": busy * 1_000_000_000 // tick, "cpus": os.cpu_count() or 1,
            "ram_total": memory.get("MemTotal", 0),
            "ram_used": memory.get("MemTotal", 0) - memory.get("MemAvailable", 0),
            "swap_total": memory.get("SwapTotal", 0),
            "swap_used": memory.get("SwapTotal", 0) - memory.get("SwapFree", 0),
            "load1": os.getloadavg()[0],
            "disk_total": st.f_blocks * st.f_frsize,
            "disk_used": (st.f_blocks - st.f_bfree) * st.f_frsize}

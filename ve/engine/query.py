"""Read-only verbs: status, list, pid. They take no lock and change nothing."""

import os
from collections import namedtuple

from .. import config as conf, state, validate
from ..errors import InvalidConfig, NotFound
from ..kernel import proc

RUNNING = "running"
STOPPED = "stopped"


_USAGE_FIELDS = "init_pid nproc ram_used ram_limit swap_used cpu_ns memory_failcnt oom_kills ips"


class VEStatus(namedtuple("VEStatus", "veid state hostname template " + _USAGE_FIELDS,
                          defaults=(None,) * 8 + ((),))):
    """One VE as ``vectl list`` shows it (usage fields are None when stopped)."""

    __slots__ = ()

    def as_dict(self):
        return self._asdict()


def _is_veid(number):
    try:
        return validate.veid(number) == number
    except InvalidConfig:
        return False


class PidOwner(namedtuple("PidOwner", "pid veid name")):
    """Which VE a host PID belongs to (veid 0 = the host; None = no such process)."""

    __slots__ = ()

    def as_dict(self):
        return self._asdict()


class QueryMixin:
    """Status queries of the Engine (needs ``self.layout`` and ``self.cgroups``)."""

    def status(self, veid):
        """Return the VEStatus of one VE, read from the kernel, not from files alone."""
        veid = validate.veid(veid)
        cfg = self._read_config(veid)
        record = self._running_init(veid)
        if record is None:
            return VEStatus(veid, STOPPED, cfg.hostname, cfg.template, ram_limit=cfg.limits.ram,
                            ips=cfg.ips)
        try:
            use = self.cgroups.usage(str(veid))
        except OSError:  # stopped between the two looks: its cgroup is gone
            return VEStatus(veid, STOPPED, cfg.hostname, cfg.template, ram_limit=cfg.limits.ram,
                            ips=cfg.ips)
        return VEStatus(veid, RUNNING, cfg.hostname, cfg.template, record.pid,
                        use.processes, use.memory, cfg.limits.ram, use.swap, use.cpu_ns,
                        use.memory_failcnt, use.oom_kills, cfg.ips)

    def list(self, running_only=False):
        """Return the VEStatus of every VE on this node, by VEID."""
        result = []
        for veid in self.layout.veids():
            try:
                status = self.status(veid)
            except NotFound:  # destroyed while we looked
                continue
            if status.state == RUNNING or not running_only:
                result.append(status)
        return result

    def config(self, veid):
        """Return the saved VEConfig of a VE."""
        return self._read_config(validate.veid(veid))

    def pid(self, pids):
        """Map host PIDs to VEIDs (0 = host); a vanished PID gets veid None.

        Also right for processes of VEs under another cgroup parent (another
        node's, or an older one's) and for zombies (a VE init not yet reaped,
        whose cgroup the kernel already shows as the root): see ``_veid_of``.
        """
        owners = []
        mine = len(proc.namespace_pids(os.getpid()))
        for raw in pids:
            text = str(raw).strip()
            if not text.isdigit():
                raise InvalidConfig(f"bad PID {raw!r}: use a positive number")
            pid = int(text)
            name = proc.name(pid)
            veid = None if name is None else self._veid_of(pid, mine)
            owners.append(PidOwner(pid, veid, name))
        return owners

    def _veid_of(self, pid, host_depth):
        """The VEID of live or zombie process ``pid``, else 0 (the host).

        In order: its cgroup under this node's parent; for a process in a PID
        namespace below ours, the host uid its root maps to (VE ranges are
        VEID*65536 and up, nested user namespaces included), a VEID-named
        directory of its cgroup path, and the run files of this node (a
        privileged VE's init not yet reaped).
        """
        group = self.cgroups.group_of(pid)
        if group and group.isdigit():
            return int(group)
        if len(proc.namespace_pids(pid)) <= host_depth:
            return 0
        for inside, outside, count in proc.uid_map(pid)[:1]:
            veid = outside // conf.IDMAP_SIZE
            if inside == 0 and _is_veid(veid):
                return veid
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                for line in f.read(65536).splitlines():
                    for part in line.split(":", 2)[-1].split("/"):
                        if part.isdigit() and _is_veid(int(part)):
                            return int(part)
        except OSError:
            pass
        started = proc.start_time(pid)
        for veid in self.layout.veids():
            record = state.read_init(self.layout.state(veid))
            if record and (record.pid, record.start_time) == (pid, started):
                return veid
        return 0

    # -- shared helpers ----------------------------------------------------

    def _read_config(self, veid, missing_ok=False):
        try:
            return conf.read(self.layout.conf(veid))
        except FileNotFoundError:
            if missing_ok:
                return None
            raise NotFound("no such VE", veid) from None

    def _running_init(self, veid):
        """Return the InitRecord of the VE's live init, or None if it is stopped.

        The run file is trusted only if its PID still has the recorded start
        time; otherwise the VE's cgroup is searched for a PID 1 of its own
        namespace (a start that crashed before writing the run file).
        """
        record = state.read_init(self.layout.state(veid))
        if record and record.is_alive():
            return record
        netns = record.netns if record else None
        name = str(veid)
        if not self.cgroups.exists(name):
            return None
        # Exactly one level below us: a PID 1 that VE root made with
        # `unshare -pf` sits deeper and is not the VE's init.
        depth = len(proc.namespace_pids(os.getpid())) + 1
        for pid in self.cgroups.pids(name):
            started = proc.start_time(pid)
            nspids = proc.namespace_pids(pid)
            if len(nspids) == depth and nspids[-1] == 1 and started is not None:
                return state.InitRecord(pid, started, proc.boot_id(), netns)
        return None

"""The runtimes under test, each behind the same small interface.

Every runtime runs the same files: the busybox template that
``Engine.template_build("busybox")`` makes, unpacked with the engine's own
``ve.storage.unpack`` and its uids/gids shifted to the container's range
(``id * 65536``), exactly as ``Engine.create`` does for a VE. Every container
gets the same isolation and limits as a VE: pid, mount, uts, ipc, net,
cgroup and user namespaces (65536 ids mapped), 256 MiB RAM with no swap,
256 processes, cpu.shares 1024, no network device but loopback, and
busybox init (``/sbin/init``, whose inittab runs ``rcS`` and then sleeps) as
PID 1.

    Ours      Engine.start/stop in this (warm) process: what a worker does
    OursCLI   `vectl start|stop` as a subprocess, timed end to end
    Crun      `crun run -d`, `crun kill` + `crun delete`, timed end to end
    Lxc       `lxc-start -d`, `lxc-stop -k`, timed end to end
    Floor     bench/floor.c: the kernel work alone, timed inside the C program

The networked runtimes add what a customer's VPS has: ours is the default VE
(disk image, one routed IPv4 and one IPv6 address, a plan's limits: 100 Mbit/s
shaping both ways, a conntrack cap, anti-spoofing rules); crun gets a veth
set up the way a CNI plugin would (``ip`` on the host and in the container's
namespace: host routes to its two addresses, the addresses and default routes
inside), LXC its own veth in router mode with the same addresses. Neither peer
shapes, caps connections or filters sources: ours does more in its time.

    OursNet     OursNetCLI     CrunNet     LxcNet
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from common import (BENCH_DIR, CommandFailed, HelperMountNS, Workspace, cleanup_stale,
                    ensure_packages, find_vectl, hierarchy_of, import_engine, log,
                    require_root, run_timed, wait_gone)

IDMAP_SIZE = 65536
RAM = 256 << 20
NUMPROC = 256
CPU_SHARES = 1024  # what the engine writes for cpuunits 1000
# The engine removes these capabilities from a VE's bounding set (ve/kernel/caps.py);
# crun and LXC get the same list so all three run with the same capabilities.
DROPPED_CAPS = ("sys_module", "sys_rawio", "sys_pacct", "sys_time", "sys_tty_config",
                "audit_control", "mac_override", "mac_admin", "syslog", "wake_alarm",
                "block_suspend", "audit_read", "perfmon", "bpf")
CAP_NAMES = ("chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap "
             "linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock "
             "ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin "
             "sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease "
             "audit_write audit_control setfcap mac_override mac_admin syslog wake_alarm "
             "block_suspend audit_read perfmon bpf checkpoint_restore").split()
# The v1 hierarchies the engine puts a VE in (the floor joins the same ones).
VE_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "pids")
# A plan's limits beyond RAM and processes (the dashboard's default plan): what the
# networked VE starts with.
PLAN_LIMITS = {"rate": 100, "numconn": 16384, "diskspace": 10 << 30, "diskinodes": 200000}
IPV6_GATEWAY = "fe80::1"  # what a routed VE's default IPv6 route points at (ours too)


def net_addresses(ident):
    """The IPv4 and IPv6 address of networked container ``ident`` (test ranges only)."""
    return f"198.18.{ident // 256}.{ident % 256}", f"fd00::{ident:x}"


class Peer:
    """One runtime: make containers, start and stop them, tell their processes."""

    name = "?"
    label = "?"
    has_clean_stop = True

    def prepare(self, ident):
        """Make container ``ident`` (its rootfs, config); not timed."""

    def start(self, ident):
        """Start container ``ident`` detached; return the wall time in ms."""
        raise NotImplementedError

    def stop_fast(self, ident):
        """Kill container ``ident`` and free its resources; return ms."""
        raise NotImplementedError

    def stop_clean(self, ident):
        """Ask ``ident``'s init to shut down (SIGUSR2 for busybox init), wait, clean up; ms."""
        raise NotImplementedError

    def container_group(self):
        """Path (pids hierarchy) under which this runtime's containers live."""
        raise NotImplementedError

    def cleanup(self):
        """Stop and remove every container this peer made (errors are logged)."""


class Ours(Peer):
    """The engine through its Python API, from this warm process.

    Its private area is a plain directory, like crun's and LXC's rootfs here,
    so the three compare like with like; ``OursImage`` adds the disk image.
    """

    name, label = "api", "ours, Python API (warm process)"
    layout = "dir"

    def __init__(self, bench):
        self.bench = bench
        self.engine = bench.engine
        self.created = set()

    def prepare(self, ident):
        cfg = self.bench.VEConfig(ident, f"ve{ident}", "busybox",
                                  self.bench.Limits(ram=RAM, swap=0, numproc=NUMPROC),
                                  layout=self.layout)
        self.engine.create(cfg)
        self.created.add(ident)

    def start(self, ident):
        t0 = time.perf_counter()
        self.engine.start(ident)
        return (time.perf_counter() - t0) * 1000

    def stop_fast(self, ident):
        t0 = time.perf_counter()
        self.engine.stop(ident, fast=True)
        return (time.perf_counter() - t0) * 1000

    def stop_clean(self, ident):
        t0 = time.perf_counter()
        self.engine.stop(ident)
        return (time.perf_counter() - t0) * 1000

    def container_group(self):
        return f"/{self.bench.ws.cgroup_prefix}/ve"

    def cleanup(self):
        for ident in sorted(self.created):
            try:
                self.engine.destroy(ident)
            except Exception as exc:
                log(f"cleanup: destroy VE {ident}: {exc}")
        self.created.clear()


class OursImage(Ours):
    """The same with the default layout: a disk image that enforces the disk
    limits (start attaches and mounts it, stop unmounts it)."""

    name, label = "image", "ours, Python API, disk image"
    layout = "image"


class OursNet(Ours):
    """The default VE a customer gets: disk image, one routed IPv4 and one IPv6
    address, a plan's limits."""

    name, label = "net_api", "ours, Python API, default VE (image, 2 addresses, plan)"
    layout = "image"

    def prepare(self, ident):
        limits = self.bench.Limits(ram=RAM, swap=0, numproc=NUMPROC, **PLAN_LIMITS)
        cfg = self.bench.VEConfig(ident, f"ve{ident}", "busybox", limits,
                                  ips=net_addresses(ident), layout=self.layout)
        self.engine.create(cfg)
        self.created.add(ident)


class OursCLI(Peer):
    """The engine through `vectl`, one process per verb (what an operator types)."""

    name, label = "cli", "ours, vectl CLI"

    def __init__(self, bench, api):
        self.bench, self.api = bench, api
        self.vectl = bench.vectl
        self.env = {**os.environ, "VE_ROOT": str(bench.ve_root),
                    "VE_CGROUP_PARENT": f"{bench.ws.cgroup_prefix}/ve"}
        self.errlog = open(bench.ws.path("vectl.err"), "a")

    def prepare(self, ident):
        self.api.prepare(ident)  # same engine, same VE_ROOT

    def _vectl(self, *args):
        return run_timed([self.vectl, *args], env=self.env, errlog=self.errlog)

    def start(self, ident):
        return self._vectl("start", str(ident))

    def stop_fast(self, ident):
        return self._vectl("stop", "--fast", str(ident))

    def stop_clean(self, ident):
        return self._vectl("stop", str(ident))

    def container_group(self):
        return self.api.container_group()

    def cleanup(self):
        self.errlog.close()


class OursNetCLI(OursCLI):
    name, label = "net_cli", "ours, vectl CLI, default VE"


def peer_rootfs(bench, ident):
    """The shifted busybox rootfs of container ``ident`` for crun, LXC and the floor."""
    path = bench.ws.path("peers", str(ident), "rootfs")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o711)
        bench.unpack(bench.template, path, ident * IDMAP_SIZE)
    return path


class Crun(Peer):
    """crun from Debian, as root, with a user namespace like a VE's."""

    name, label = "crun", "crun run -d / kill KILL + delete"

    def __init__(self, bench):
        self.bench = bench
        self.ns = bench.crun_ns
        self.state = bench.ws.path(f"{self.name}-state")
        self.state.mkdir()
        self.errlog = open(bench.ws.path(f"{self.name}.err"), "a")
        self.base_spec = self._base_spec()
        self.made = set()
        self.delete_retries = 0

    def _base_spec(self):
        scratch = self.bench.ws.path("crun-spec")
        scratch.mkdir()
        subprocess.run(["crun", "spec", "-b", str(scratch)], check=True)
        spec = json.loads((scratch / "config.json").read_text())
        shutil.rmtree(scratch)
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        caps = [f"CAP_{c.upper()}" for i, c in enumerate(CAP_NAMES)
                if i <= last and c not in DROPPED_CAPS]
        process = spec["process"]
        process.update(terminal=False, args=["/sbin/init"], noNewPrivileges=False,
                       env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "HOME=/root", "TERM=linux", "container=crun"],
                       capabilities={"bounding": caps, "effective": caps, "permitted": caps,
                                     "inheritable": [], "ambient": []})
        process.pop("rlimits", None)  # a VE inherits the host's limits
        spec["root"]["readonly"] = False
        # A VE has no cgroupfs mounted inside: drop crun's default /sys/fs/cgroup mount.
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        linux = spec["linux"]
        linux["namespaces"] = [{"type": t} for t in
                               ("pid", "network", "ipc", "uts", "mount", "cgroup", "user")]
        linux["resources"].update(memory={"limit": RAM, "swap": RAM},  # swap = RAM + swap
                                  pids={"limit": NUMPROC}, cpu={"shares": CPU_SHARES})
        return spec

    def bundle(self, ident):
        return self.bench.ws.path("peers", str(ident))

    def prepare(self, ident):
        rootfs = peer_rootfs(self.bench, ident)
        spec = json.loads(json.dumps(self.base_spec))
        base = ident * IDMAP_SIZE
        spec["hostname"] = f"crun{ident}"
        spec["root"]["path"] = str(rootfs)
        spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": base, "size": IDMAP_SIZE}]
        spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": base, "size": IDMAP_SIZE}]
        spec["linux"]["cgroupsPath"] = f"{self.container_group()}/vb{ident}"
        (self.bundle(ident) / "config.json").write_text(json.dumps(spec, indent=1))

    def _crun(self, *args, check=True):
        return run_timed(["crun", "--root", str(self.state), *args], errlog=self.errlog,
                         check=check)

    def start(self, ident):
        with self.ns.inside():
            ms = self._crun("run", "-d", "-b", str(self.bundle(ident)), f"vb{ident}")
        self.made.add(ident)
        return ms

    def stop_fast(self, ident):
        with self.ns.inside():
            t0 = time.perf_counter()
            self._crun("kill", f"vb{ident}", "KILL")
            self._delete(ident)
            ms = (time.perf_counter() - t0) * 1000
        self.made.discard(ident)
        return ms

    def _delete(self, ident):
        # `crun delete` refuses a container that still runs; the kill is async.
        for _ in range(200):
            try:
                self._crun("delete", f"vb{ident}")
                return
            except CommandFailed:
                self.delete_retries += 1
                time.sleep(0.001)
        self._crun("delete", "-f", f"vb{ident}")

    def init_pid(self, ident):
        with self.ns.inside():
            out = subprocess.run(["crun", "--root", str(self.state), "state", f"vb{ident}"],
                                 capture_output=True, text=True, check=True).stdout
        return json.loads(out)["pid"]

    def stop_clean(self, ident):
        pid = self.init_pid(ident)
        with self.ns.inside():
            t0 = time.perf_counter()
            self._crun("kill", f"vb{ident}", "USR2")
            if not wait_gone(pid, 60):
                raise CommandFailed(f"crun container vb{ident} ignored SIGUSR2 for 60 s")
            self._delete(ident)
            ms = (time.perf_counter() - t0) * 1000
        self.made.discard(ident)
        return ms

    def container_group(self):
        return f"/{self.bench.ws.cgroup_prefix}/crun"

    def cleanup(self):
        try:
            with self.ns.inside():
                for entry in sorted(self.state.iterdir()) if self.state.exists() else ():
                    subprocess.run(["crun", "--root", str(self.state), "delete", "-f",
                                    entry.name], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=self.errlog)
        finally:
            self.errlog.close()


class CrunNet(Crun):
    """crun, then the veth a CNI plugin would give it (ptp-like, routed): one ``ip
    -batch`` on the host, one inside the container's network namespace (``nsenter``).
    Stop: crun kill + delete, then the host end of the veth is deleted (as a CNI
    plugin's DEL does), so that the next start finds its name free."""

    name, label = "net_crun", "crun + veth (ip on host and inside)"

    def __init__(self, bench):
        super().__init__(bench)
        self.veths = set()

    def host_ifname(self, ident):
        return f"vc{ident}"

    def start(self, ident):
        pidfile = self.bench.ws.path(f"{self.name}-vb{ident}.pid")
        v4, v6 = net_addresses(ident)
        veth = self.host_ifname(ident)
        with self.ns.inside():
            t0 = time.perf_counter()
            self._crun("run", "-d", "--pid-file", str(pidfile), "-b", str(self.bundle(ident)),
                       f"vb{ident}")
            self.made.add(ident)
            self.veths.add(veth)
            pid = int(pidfile.read_text())
            _ip_batch(["ip", "-batch", "-"], self.errlog, f"""\
link add {veth} type veth peer name eth0 netns {pid}
addr add {IPV6_GATEWAY}/64 dev {veth} nodad
link set {veth} up
route add {v4}/32 dev {veth}
route add {v6}/128 dev {veth}
""")
            Path(f"/proc/sys/net/ipv4/conf/{veth}/proxy_arp").write_text("1")
            _ip_batch(["nsenter", "-t", str(pid), "-n", "ip", "-batch", "-"], self.errlog, f"""\
addr add {v4}/32 dev eth0
addr add {v6}/128 dev eth0 nodad
link set lo up
link set eth0 up
route add default dev eth0
route add default via {IPV6_GATEWAY} dev eth0
""")
            return (time.perf_counter() - t0) * 1000

    def stop_fast(self, ident):
        with self.ns.inside():
            t0 = time.perf_counter()
            self._crun("kill", f"vb{ident}", "KILL")
            self._delete(ident)
            self._remove_veth(ident)
            ms = (time.perf_counter() - t0) * 1000
        self.made.discard(ident)
        return ms

    def stop_clean(self, ident):
        ms = super().stop_clean(ident)
        t0 = time.perf_counter()
        self._remove_veth(ident)
        return ms + (time.perf_counter() - t0) * 1000

    def _remove_veth(self, ident):
        # The dying namespace may have taken the pair already: no error then.
        run_timed(["ip", "link", "del", self.host_ifname(ident)], errlog=self.errlog,
                  check=False)

    def cleanup(self):
        try:
            super().cleanup()
        finally:
            for veth in self.veths:
                subprocess.run(["ip", "link", "del", veth], stderr=subprocess.DEVNULL)


def _ip_batch(argv, errlog, commands):
    """Run ``ip -batch -`` with ``commands`` on its stdin; fail on any error."""
    out = subprocess.run(argv, input=commands, text=True, stdout=subprocess.DEVNULL,
                         stderr=errlog)
    if out.returncode:
        raise CommandFailed(f"{' '.join(argv)} failed (see {errlog.name})")


class Lxc(Peer):
    """LXC from Debian (lxc-start -d / lxc-stop), as root, unprivileged container."""

    name, label = "lxc", "lxc-start -d / lxc-stop -k"

    def __init__(self, bench):
        self.bench = bench
        self.path = bench.ws.path(self.name)
        self.path.mkdir()
        os.chmod(self.path, 0o711)
        # With uidmap installed, LXC insists that even root reserves its id
        # ranges in /etc/subuid and runs setuid newuidmap/newgidmap on every
        # start. Hiding them (PATH has no /usr/bin) makes it write the maps
        # directly as root, as crun and the engine do. /usr/sbin has nothing
        # lxc-start needs besides; the tools are called by absolute path.
        self.env = {"PATH": "/usr/sbin:/sbin", "LANG": "C"}
        self.errlog = open(bench.ws.path(f"{self.name}.err"), "a")
        self.made = set()

    def prepare(self, ident):
        rootfs = peer_rootfs(self.bench, ident)
        name = f"vb{ident}"
        directory = self.path / name
        directory.mkdir(exist_ok=True)
        base = ident * IDMAP_SIZE
        prefix = self.bench.ws.cgroup_prefix
        caps = " ".join(DROPPED_CAPS)
        (directory / "config").write_text(f"""\
lxc.uts.name = lxc{ident}
lxc.rootfs.path = dir:{rootfs}
lxc.idmap = u 0 {base} {IDMAP_SIZE}
lxc.idmap = g 0 {base} {IDMAP_SIZE}
{self.net_config(ident)}
lxc.init.cmd = /sbin/init
lxc.signal.halt = SIGUSR2
lxc.mount.auto = proc:mixed sys:ro
lxc.mount.entry = shm dev/shm tmpfs nosuid,nodev,noexec,mode=1777,size=65536k,create=dir 0 0
lxc.mount.entry = mqueue dev/mqueue mqueue nosuid,nodev,noexec,create=dir 0 0
lxc.autodev = 1
lxc.pty.max = 16
lxc.tty.max = 0
lxc.console.path = none
lxc.apparmor.profile = unconfined
lxc.cap.drop = {caps}
lxc.cgroup.dir.container = {prefix}/lxc/{name}
lxc.cgroup.dir.monitor = {prefix}/lxcmon/{name}
lxc.cgroup.dir.monitor.pivot = {prefix}/lxcpivot
lxc.cgroup.memory.limit_in_bytes = {RAM}
lxc.cgroup.memory.memsw.limit_in_bytes = {RAM}
lxc.cgroup.pids.max = {NUMPROC}
lxc.cgroup.cpu.shares = {CPU_SHARES}
""")

    def net_config(self, ident):
        return "lxc.net.0.type = empty"

    def _lxc(self, tool, ident, *args, check=True):
        return run_timed([f"/usr/bin/{tool}", "-n", f"vb{ident}", "-P", str(self.path), *args],
                         env=self.env, errlog=self.errlog, check=check)

    def start(self, ident):
        ms = self._lxc("lxc-start", ident, "-d")
        self.made.add(ident)
        return ms

    def stop_fast(self, ident):
        ms = self._lxc("lxc-stop", ident, "-k")
        self.made.discard(ident)
        return ms

    def stop_clean(self, ident):
        ms = self._lxc("lxc-stop", ident, "-t", "60")
        self.made.discard(ident)
        return ms

    def container_group(self):
        return f"/{self.bench.ws.cgroup_prefix}/lxc"

    def cleanup(self):
        try:
            for ident in sorted(self.made):
                self._lxc("lxc-stop", ident, "-k", check=False)
            self.made.clear()
        finally:
            self.errlog.close()


class LxcNet(Lxc):
    """LXC's own veth in router mode: host routes to the container's addresses and
    proxy ARP/NDP for its gateways, the addresses and default routes inside."""

    name, label = "net_lxc", "LXC + veth (router mode)"

    def net_config(self, ident):
        v4, v6 = net_addresses(ident)
        return "\n".join((
            "lxc.net.0.type = veth", "lxc.net.0.veth.mode = router",
            f"lxc.net.0.veth.pair = vl{ident}", "lxc.net.0.name = eth0",
            "lxc.net.0.flags = up", f"lxc.net.0.ipv4.address = {v4}/32",
            "lxc.net.0.ipv4.gateway = dev", f"lxc.net.0.ipv6.address = {v6}/128",
            "lxc.net.0.ipv6.gateway = dev"))


class Floor(Peer):
    """bench/floor.c: cgroups + namespaces + pivot_root + exec, nothing else, timed in C.

    ``tasks=False`` joins the cgroups with "PID > cgroup.procs" as crun and LXC
    do; ``tasks=True`` with "0 > tasks" (the calling thread only), which on
    cgroup v1 skips the lock whose first use after a quiet spell waits for an
    RCU grace period.
    """

    has_clean_stop = False

    def __init__(self, bench, tasks=False):
        self.bench = bench
        self.tasks = tasks
        self.name = "floor_tasks" if tasks else "floor"
        self.label = ("kernel floor, C, joins via tasks" if tasks
                      else "kernel floor, C, joins via cgroup.procs")
        self.binary = bench.ws.path("floor")
        if not self.binary.exists():
            subprocess.run(["gcc", "-O2", "-o", str(self.binary), str(BENCH_DIR / "floor.c")],
                           check=True)
        self.group = f"{bench.ws.cgroup_prefix}/{self.name}"
        self.mounts = [m for m in dict.fromkeys(hierarchy_of(c) for c in VE_CONTROLLERS) if m]
        self._make_parents()
        self.counter = 0
        self.running = {}  # ident -> (init pid, [cgroup dirs])

    def _make_parents(self):
        cpuset = hierarchy_of("cpuset")
        for mount in self.mounts:
            path = Path(mount)
            for part in self.group.split("/"):
                path = path / part
                path.mkdir(exist_ok=True)
                if mount == cpuset:
                    for name in ("cpuset.cpus", "cpuset.mems"):
                        if not (path / name).read_text().strip():
                            (path / name).write_text((path.parent / name).read_text())

    def prepare(self, ident):
        peer_rootfs(self.bench, ident)

    def start(self, ident):
        self.counter += 1
        dirs = [f"{m}/{self.group}/f{self.counter}" for m in self.mounts]
        rootfs = peer_rootfs(self.bench, ident)
        flag = ["--tasks"] if self.tasks else []
        out = subprocess.run([str(self.binary), *flag, str(rootfs), str(ident * IDMAP_SIZE), *dirs],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if out.returncode != 0:
            raise CommandFailed(f"floor: {out.stderr.strip()}")
        pid, nanoseconds = map(int, out.stdout.split())
        self.running[ident] = (pid, dirs)
        return nanoseconds / 1e6

    def stop_fast(self, ident):
        """Not timed (None): kill init, remove its cgroups."""
        pid, dirs = self.running.pop(ident)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_gone(pid, 5)
        for directory in dirs:
            for _ in range(100):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
        return None

    def container_group(self):
        return f"/{self.group}"

    def cleanup(self):
        for ident in list(self.running):
            self.stop_fast(ident)


class Bench:
    """One benchmark run: workspace, engine, template, crun's namespace, the peers.

    Use as a context manager: leaving it (normally, on an error or on
    Ctrl-C) stops every container and removes every file and cgroup made.
    """

    def __init__(self, want_floor=True):
        require_root()
        ensure_packages()
        cleanup_stale()
        self.ws = Workspace()
        self.want_floor = want_floor
        self.peers = {}

    def __enter__(self):
        try:
            self._setup()
        except BaseException:
            self.ws.cleanup()
            raise
        return self

    def _setup(self):
        ws = self.ws
        log(f"workspace {ws.dir}, cgroups {ws.cgroup_prefix}/")
        Engine, self.VEConfig, self.Limits, self.unpack = import_engine()
        self.ve_root = ws.path("ve")
        self.engine = Engine(root=str(self.ve_root), cgroup_parent=f"{ws.cgroup_prefix}/ve")
        self.template = self.engine.template_build("busybox")
        self.vectl = find_vectl()
        self.crun_ns = HelperMountNS(ws.dir)
        ws.on_cleanup(self.crun_ns.close)
        api = Ours(self)
        ws.on_cleanup(api.cleanup)
        self.peers = {"api": api, "cli": OursCLI(self, api), "image": OursImage(self)}
        ws.on_cleanup(self.peers["cli"].cleanup)
        ws.on_cleanup(self.peers["image"].cleanup)
        self.peers["crun"] = Crun(self)
        ws.on_cleanup(self.peers["crun"].cleanup)
        self.peers["lxc"] = Lxc(self)
        ws.on_cleanup(self.peers["lxc"].cleanup)
        net_api = OursNet(self)
        ws.on_cleanup(net_api.cleanup)
        for peer in (net_api, OursNetCLI(self, net_api), CrunNet(self), LxcNet(self)):
            self.peers[peer.name] = peer
            if peer is not net_api:
                ws.on_cleanup(peer.cleanup)
        if self.want_floor and shutil.which("gcc"):
            for tasks in (False, True):
                floor = Floor(self, tasks)
                self.peers[floor.name] = floor
                ws.on_cleanup(floor.cleanup)
        elif self.want_floor:
            log("gcc is missing: no kernel floor measurement")

    def __exit__(self, *exc):
        from common import uninterrupted
        with uninterrupted():
            log("cleaning up")
            problems = self.ws.cleanup()
        if problems:
            log(f"cleanup finished with {len(problems)} problem(s)")
        return False

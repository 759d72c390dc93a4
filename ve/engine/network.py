"""The network half of the Engine's verbs (see ve/net for the mechanics).

Only VEs with addresses (or bridged ones) load ve.net.

A VE's host side lives in the network namespace it was started from (the run
file records which). Every host-side step enters that namespace when the
caller is elsewhere and it is reachable (ours, or named under /run/netns);
a figure that cannot be read there is unknown (None), never 0.
"""

import contextlib
import os
import sys

from .. import net, state
from ..errors import AlreadyExists, ResourceError, StateError
from ..kernel import netns
from ..log import get as get_logger

log = get_logger(__name__)


def _net_errors():
    """What a network step may raise: OSError (ve.net.rtnl's NetlinkError is one),
    pyroute2's NetlinkError (not an OSError: the sampler's and conntrack's dumps) and
    IndexError from a link that vanished under us."""
    if "pyroute2" not in sys.modules:
        return (OSError, IndexError)  # nothing here used it: no need to import it
    from pyroute2.netlink.exceptions import NetlinkError
    return (OSError, NetlinkError, IndexError)


class NetMixin:
    """Network steps of the Engine (needs ``layout`` and ``_inside``)."""

    def traffic(self, veid):
        """The VE's rx/tx bytes and packets over all its runs (its own point of view).

        None for each figure while the VE runs with its host side in a
        network namespace this caller cannot enter.
        """
        cfg = self._read_config(veid)
        from ..net import counters
        path = self.layout.counters(cfg.veid)
        if not net.has_network(cfg) or self._running_init(cfg.veid) is None:
            return counters.saved(path)  # nothing runs: the totals are complete
        with self._host_side(cfg.veid) as reachable:
            if not reachable:
                return dict.fromkeys(counters.FIELDS)
            from ..net import links
            return links.traffic(cfg.veid, path)

    def conntrack_use(self, cfg):
        """{"conntrack": entries the running VE holds in the host's table,
        "conntrack_refused": new connections its limit dropped since it was set on this
        node (restarts keep it)}; Nones
        without a limit (routed VEs only) or out of reach."""
        use = {"conntrack": None, "conntrack_refused": None}
        if cfg.netmode != "routed" or not cfg.limits.numconn or not net.has_network(cfg):
            return use
        import subprocess
        from ..net import conntrack
        with self._host_side(cfg.veid) as reachable:
            if reachable:
                try:
                    use.update(conntrack=conntrack.entries(cfg.veid),
                               conntrack_refused=conntrack.refused(cfg.veid))
                except (*_net_errors(), ValueError, subprocess.SubprocessError) as exc:
                    log.warning("VE %s: cannot read its conntrack use: %s", cfg.veid, exc)
        return use

    def netif_use(self, cfg, record):
        """{"netif": network devices the running VE (init ``record``) has in its
        namespace, "netif_refused": devices the node watcher deleted over its cap
        this run (None without a cap)}."""
        from ..net import netif
        use = {"netif": None, "netif_refused": None}
        try:
            use["netif"] = netif.count(record.pid)
        except OSError:
            pass  # it stopped meanwhile
        if cfg.limits.numnetif:
            use["netif_refused"] = netif.refused(self.layout.netif_record(cfg.veid),
                                                 (record.pid, record.start_time))
        return use

    def ve_link_index(self, veid):
        """The ifindex, inside running VE ``veid``, of the eth0 the engine gave it
        (the peer of its host-side veth); None if it has none or it is out of reach."""
        with self._host_side(veid) as reachable:
            if not reachable:
                return None
            from ..net import links
            try:
                return links.peer_index(veid)
            except _net_errors():
                return None

    @contextlib.contextmanager
    def _host_side(self, veid):
        """Run the body in the network namespace of the VE's host side; yield
        False (staying put) if that namespace is out of this caller's reach."""
        record = state.read_init(self.layout.state(veid))  # live or left by a dead VE
        path = netns.path_of(record.netns if record else None)
        if path is None:
            yield False
        elif path == netns.OWN:
            yield True
        else:
            with netns.entered(path):
                yield True

    def _on_host_side(self, cfg, step, failure, if_unreachable):
        """Run ``step()`` in the VE's host namespace; warn ``if_unreachable`` (and skip
        it) when that namespace is out of reach; a netlink error is a ResourceError."""
        with self._host_side(cfg.veid) as reachable:
            if not reachable:
                log.warning("VE %s: its host side is in a network namespace out of reach; %s",
                            cfg.veid, if_unreachable)
                return
            try:
                step()
            except _net_errors() as exc:
                raise ResourceError(f"{failure}: {exc}", cfg.veid) from exc

    def _net_prepare(self, cfg):
        """What a start can do for the VE's network before its init exists (see
        ``links.prepare``); None for a VE without one. The caller hands the result to
        ``_net_up``, or ``_net_abandon``s it."""
        if not net.has_network(cfg):
            return None
        from ..net import links
        try:
            return links.prepare(cfg, self.layout.host_side(cfg.veid))
        except _net_errors() as exc:
            raise ResourceError(f"network setup failed: {exc}", cfg.veid) from exc

    @staticmethod
    def _net_abandon(prepared):
        """Let a prepared network go unused (its nft run ends; ``_net_down`` removes it)."""
        if prepared is not None:
            prepared.finish(quietly=True)

    def _net_up(self, cfg, pid, prepared=None):
        """Wire a starting VE's network, in the caller's namespace (the run file
        written next records it as the VE's host side)."""
        if not net.has_network(cfg):
            return
        from ..net import links
        try:
            links.attach(cfg, pid, self.layout.host_side(cfg.veid), prepared)
        except _net_errors() as exc:
            raise ResourceError(f"network setup failed: {exc}", cfg.veid) from exc

    def _net_pair_for_restore(self, cfg):
        """The veth a restored VE gets (see ``links.pair_for_restore``); its VE end's name."""
        from ..net import links
        try:
            return links.pair_for_restore(cfg, self.layout.host_side(cfg.veid))
        except _net_errors() as exc:
            raise ResourceError(f"network setup failed: {exc}", cfg.veid) from exc

    def _net_attach_restored(self, cfg):
        from ..net import links
        try:
            links.attach_restored(cfg)
        except _net_errors() as exc:
            raise ResourceError(f"network setup failed: {exc}", cfg.veid) from exc

    def _net_files(self, cfg):
        """/etc/resolv.conf and /etc/hosts of a running VE, from its config (written by
        the engine from inside the VE, never by one of its programs). A start has its
        init write them (``net_files``)."""
        files = net_files(cfg)
        if files:
            self._inside(cfg.veid, _write_files, (dict(files),),
                         "cannot write the VE's network files")

    def _net_save_counters(self, cfg):
        """Add the running VE's link counters to its totals, just before it stops.

        Its namespace takes the veth along when init dies, so nothing can be
        counted twice; what moves during the shutdown itself is not counted.
        """
        if cfg is None or not net.has_network(cfg):
            return
        from ..net import links
        path = self.layout.counters(cfg.veid)
        self._on_host_side(cfg, lambda: links.save_counters(cfg.veid, path),
                           "cannot save traffic counters", "the traffic of this run is not counted")

    def _net_down(self, cfg, save_counters=False, retire=False):
        """Remove what the VE's network had on the host but its ifb; safe to repeat.

        ``save_counters``: first add the link's counters to the VE's totals
        (its last address went while it runs). The link goes at once, so the
        counters are never counted twice. ``retire``: the VE's init is dead and
        the caller lets its namespace go, which takes the link along (see
        ``links.detach``).
        """
        if cfg is None or not net.has_network(cfg):
            return
        from ..net import links
        if save_counters:
            self._net_save_counters(cfg)
        # Out of reach, the link still dies with the VE's namespace; rules and proxy
        # entries wait for the next start or stop made from that namespace.
        wired = self.layout.host_side(cfg.veid)
        self._on_host_side(cfg, lambda: links.detach(cfg.veid, cfg.ips, wired, retire),
                           "network cleanup failed", "left for a start or stop from there")

    def _net_forget(self, veid):
        """Delete what a stopped VE keeps on the host between runs (its ifb and
        conntrack chains): it leaves the node, or its rate, limit or network went. A
        warning, not an error, if that fails: nothing depends on it but the host's
        tidiness."""
        from ..net import links
        try:
            if not links.forget(veid, self.layout.host_side(veid)):
                log.warning("VE %s: its host side is in a network namespace out of reach; "
                            "its ifb and conntrack chains stay there", veid)
        except Exception as exc:  # tidying only: never what fails a destroy or a set
            log.warning("VE %s: cannot delete its ifb and conntrack chains: %s", veid, exc)

    def _net_change(self, old, new):
        """Apply address, rate and name changes to a running VE."""
        from ..net import links
        record = self._running_init(new.veid)
        if record is None:
            raise StateError("the VE stopped while being changed", new.veid)
        with self._host_side(new.veid) as reachable:
            if not reachable:
                raise StateError("the VE's host side is in a network namespace out of reach: "
                                 "change its network from there", new.veid)
            if net.has_network(new) and not net.has_network(old):
                self._net_up(new, record.pid)
            elif net.has_network(old) and not net.has_network(new):
                self._net_down(old, save_counters=True)  # its last address went
                self._net_forget(new.veid)
            else:
                added = [ip for ip in new.ips if ip not in old.ips]
                removed = [ip for ip in old.ips if ip not in new.ips]
                try:
                    if added or removed:
                        links.change_ips(new, record.pid, added, removed,
                                          self.layout.host_side(new.veid))
                    if new.limits.rate != old.limits.rate:
                        links.set_rate(new.veid, new.limits.rate)
                    if new.limits.numconn != old.limits.numconn and new.netmode == "routed":
                        links.set_numconn(new.veid, new.limits.numconn,
                                          self.layout.host_side(new.veid))
                except _net_errors() as exc:
                    raise ResourceError(f"network change failed: {exc}", new.veid) from exc
        self._net_files(new)

    def _net_drain(self, veid, fd):
        """Let the stopped VE's network namespace (descriptor ``fd``, closed here) go.

        One with a few devices is left to the kernel. One that holds more (a
        VE that made bridges by the thousand) is handed to a detached
        ``python -m ve.net.teardown`` that deletes them a few at a time: the
        kernel would delete them all under rtnl at once, and every other VE's
        start would wait for it (ve/net/teardown.py). The stop does not wait.
        """
        try:
            from ..net import teardown
            devices = teardown.count(f"/proc/self/fd/{fd}")
            if devices > teardown.FEW:
                import subprocess  # on use, like threading: a stop rarely needs a drainer
                import threading
                drainer = subprocess.Popen(
                    [sys.executable, "-m", "ve.net.teardown", str(fd)], pass_fds=(fd,),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, cwd="/", env=_drainer_env())
                # A long-lived caller (worker, watcher) reaps it; vectl just exits.
                threading.Thread(target=drainer.wait, daemon=True).start()
                log.info("VE %s: %s network devices left; removing them in the background",
                         veid, devices)
        except OSError as exc:
            log.warning("VE %s: its network namespace goes to the kernel at once: %s", veid, exc)
        finally:
            os.close(fd)

    def _check_ips_free(self, cfg):
        """Refuse addresses another VE of this node already has (its routes would clash)."""
        mine = set(cfg.ips)
        if not mine:
            return
        for veid in self.layout.veids():
            if veid == cfg.veid:
                continue
            other = self._read_config(veid, missing_ok=True)
            taken = mine & set(other.ips) if other else set()
            if taken:
                raise AlreadyExists(f"address {', '.join(sorted(taken))} belongs to VE {veid}",
                                    cfg.veid)



def net_files(cfg):
    """((path, bytes), ...): the VE's /etc/resolv.conf (if it has nameservers) and
    /etc/hosts (if it has addresses), from its config."""
    files = []
    if cfg.nameservers:
        files.append(("/etc/resolv.conf",
                      "".join(f"nameserver {ns}\n" for ns in cfg.nameservers).encode()))
    if cfg.ips:
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        short = cfg.hostname.split(".")[0]
        names = cfg.hostname if short == cfg.hostname else f"{cfg.hostname} {short}"
        hosts += [f"{ip}\t{names}" for ip in cfg.ips]
        files.append(("/etc/hosts", ("\n".join(hosts) + "\n").encode()))
    return tuple(files)


def _write_files(files):
    """Run inside the VE: replace each file with its text (mode 0644, VE root's)."""
    from ..kernel import vefiles
    for path, data in files.items():
        vefiles.replace(path, data, 0o644)


def _drainer_env():
    """The drainer finds this very ``ve`` package (vectl may run from a checkout)."""
    package_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONPATH": package_dir}

"""Setting a VE's network up at start and taking it down at stop.

``attach`` undoes its own steps when one fails; ``detach`` removes every
link, rule, proxy entry and qdisc a VE had, including what a crashed start
or a VE that died on its own left behind.
"""

import contextlib
import errno
import os
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..kernel import netns

from . import IPV6_GATEWAY, VE_IFNAME, conntrack, counters, guard, host_ifname, \
    restore_ifname, rules, shaping, sysctl

IFA_F_NODAD = 0x02
SCOPE_LINK = 253
UPLINK_ENV = "VE_NET_UPLINK"  # host interface whose neighbours learn VE addresses by proxy


def attach(cfg, pid):
    """Give running VE ``cfg.veid`` (init ``pid``) its veth, addresses, rules and limits."""
    with IPRoute() as ipr:
        _remove_host_side(ipr, cfg.veid)
        try:
            ipr.link("add", ifname=host_ifname(cfg.veid), kind="veth",
                     peer={"ifname": VE_IFNAME, "net_ns_pid": pid,
                           "address": guard.ve_mac(cfg.veid)})
            _wire_host_side(ipr, cfg)
        except BaseException:
            _remove_host_side(ipr, cfg.veid, cfg.ips)
            raise
    _configure_inside(pid, cfg)


def pair_for_restore(cfg):
    """Make the veth of a VE about to be restored, both ends here; return the name of
    the VE's end, which criu moves into the restored namespace as eth0 (keeping the
    addresses and routes it had inside)."""
    peer = restore_ifname(cfg.veid)
    with IPRoute() as ipr:
        _remove_host_side(ipr, cfg.veid)
        for index in ipr.link_lookup(ifname=peer):  # left by a restore that crashed
            ipr.link("del", index=index)
        ipr.link("add", ifname=host_ifname(cfg.veid), kind="veth",
                 peer={"ifname": peer, "address": guard.ve_mac(cfg.veid)})
    return peer


def attach_restored(cfg):
    """The host side of a VE that criu restored onto ``pair_for_restore``'s veth.

    Its routes come only now, with the VE there to answer: until then its
    addresses were unreachable, and a client's retransmissions wait for it.
    """
    with IPRoute() as ipr:
        try:
            _wire_host_side(ipr, cfg)
        except BaseException:
            _remove_host_side(ipr, cfg.veid, cfg.ips)
            raise


def _wire_host_side(ipr, cfg):
    """Everything on the host end of the VE's veth: addresses, bridge or routes, rules,
    conntrack limit, shaping."""
    name = host_ifname(cfg.veid)
    routed = cfg.netmode == "routed"
    index = ipr.link_lookup(ifname=name)[0]
    sysctl.prepare_host(name, routed)
    if routed:
        ipr.addr("add", index=index, address=IPV6_GATEWAY, prefixlen=64,
                 flags=IFA_F_NODAD)
    else:
        bridge = ipr.link_lookup(ifname=cfg.bridge)
        if not bridge:
            raise OSError(f"bridge {cfg.bridge} does not exist")
        ipr.link("set", index=index, master=bridge[0])
        guard.apply(cfg.veid, cfg.ips)  # before the port comes up
    ipr.link("set", index=index, state="up")
    rules.install(ipr, name, cfg.ips)
    if routed:
        conntrack.apply(cfg.veid, cfg.limits.numconn)  # before the VE has an address
    for ip in cfg.ips:
        _host_route(ipr, index, ip, routed, add=True)
    shaping.apply(ipr, cfg.veid, index, cfg.limits.rate)


def save_counters(veid, counters_path):
    """Add the running VE's link counters to its saved totals (just before it stops)."""
    with IPRoute() as ipr:
        link = _link(ipr, host_ifname(veid))
        if link is not None:
            counters.save_link(counters_path, link)


def detach(veid, ips):
    """Remove the VE's host side: link, ifb, rules, proxy entries (qdiscs go with the link)."""
    with IPRoute() as ipr:
        _remove_host_side(ipr, veid, ips)


def traffic(veid, counters_path):
    """Totals of all runs so far, including the running one."""
    with IPRoute() as ipr:
        return counters.total(counters_path, _link(ipr, host_ifname(veid)))


def change_ips(cfg, pid, added, removed):
    """Add and remove addresses of a running VE (host side and inside)."""
    name, routed = host_ifname(cfg.veid), cfg.netmode == "routed"
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        for ip in added:
            rules.allow(ipr, name, ip)
            _host_route(ipr, index, ip, routed, add=True)
        for ip in removed:
            _quietly(rules.allow, ipr, name, ip, add=False)
            _quietly(_host_route, ipr, index, ip, routed, add=False)
    if not routed:
        guard.apply(cfg.veid, cfg.ips)
    before = [ip for ip in cfg.ips if ip not in added] + list(removed)
    with _inside(pid) as ns:
        inside = ns.link_lookup(ifname=VE_IFNAME)[0]
        for ip in added:
            ns.addr("add", index=inside, address=ip, prefixlen=_prefix(ip), flags=IFA_F_NODAD)
        for ip in removed:
            _quietly(ns.addr, "del", index=inside, address=ip, prefixlen=_prefix(ip))
        # The first address of a family needs that family's default route.
        for v6 in (False, True):
            if not any((":" in ip) == v6 for ip in before) and \
                    any((":" in ip) == v6 for ip in added):
                _default_route(ns, inside, v6, cfg.netmode == "routed")


def peer_index(veid):
    """The ifindex of the VE's eth0 in its namespace (its host-side veth's peer), or None."""
    with IPRoute() as ipr:
        link = _link(ipr, host_ifname(veid))
        return None if link is None else link.get_attr("IFLA_LINK")


def set_numconn(veid, limit):
    """Change a running routed VE's conntrack limit (0 removes it)."""
    conntrack.apply(veid, limit)


def set_rate(veid, rate_mbit):
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=host_ifname(veid))
        if index:
            shaping.apply(ipr, veid, index[0], rate_mbit)


def _configure_inside(pid, cfg):
    """Addresses and default routes on the VE's eth0, from inside its namespace."""
    with _inside(pid) as ns:
        index = ns.link_lookup(ifname=VE_IFNAME)[0]
        for ip in cfg.ips:
            ns.addr("add", index=index, address=ip, prefixlen=_prefix(ip), flags=IFA_F_NODAD)
        ns.link("set", index=index, state="up")
        for v6 in (False, True):
            if any((":" in ip) == v6 for ip in cfg.ips):
                _default_route(ns, index, v6, cfg.netmode == "routed")


def _default_route(ns, index, v6, routed):
    """IPv4: on-link default (the host side answers ARP); IPv6: via fe80::1 when routed."""
    if not v6:
        ns.route("add", dst="0.0.0.0/0", oif=index, scope=SCOPE_LINK)
    elif routed:
        ns.route("add", dst="::/0", gateway=IPV6_GATEWAY, oif=index, family=socket.AF_INET6)
    else:
        ns.route("add", dst="::/0", oif=index, family=socket.AF_INET6)


@contextlib.contextmanager
def _inside(pid):
    """An IPRoute whose netlink socket lives in the network namespace of ``pid``.

    The calling thread enters that namespace just long enough to open the
    socket. (pyroute2's own netns mode forks a helper and ends it with
    SIGTERM, which inside a Celery pool process hit the pool itself.)
    """
    with netns.entered(f"/proc/{pid}/ns/net"):
        ipr = IPRoute()
    with ipr:
        yield ipr


def _host_route(ipr, index, ip, routed, add):
    uplink = os.environ.get(UPLINK_ENV)
    if routed:
        ipr.route("add" if add else "del", dst=f"{ip}/{_prefix(ip)}", oif=index,
                  family=socket.AF_INET6 if ":" in ip else socket.AF_INET)
    if routed and uplink:
        up = ipr.link_lookup(ifname=uplink)
        if up:
            if add and ":" in ip:
                sysctl.write(f"ipv6/conf/{uplink}/proxy_ndp", 1)
            ipr.neigh("add" if add else "del", dst=ip, ifindex=up[0], flags=0x08,  # NTF_PROXY
                      family=socket.AF_INET6 if ":" in ip else socket.AF_INET)


def _remove_host_side(ipr, veid, ips=()):
    name = host_ifname(veid)
    _quietly(rules.remove, ipr, name)
    _quietly(guard.remove, veid)
    _quietly(conntrack.remove, veid)
    uplink = os.environ.get(UPLINK_ENV)
    up = ipr.link_lookup(ifname=uplink) if uplink else []
    for ip in ips:
        if up:
            _quietly(ipr.neigh, "del", dst=ip, ifindex=up[0], flags=0x08,
                     family=socket.AF_INET6 if ":" in ip else socket.AF_INET)
    shaping.clear(ipr, veid)
    for index in ipr.link_lookup(ifname=name):
        try:
            ipr.link("del", index=index)  # takes the VE's eth0, host routes and qdiscs with it
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise  # ENODEV: the VE's namespace, dying, took the pair along meanwhile


def _link(ipr, name):
    index = ipr.link_lookup(ifname=name)
    return ipr.get_links(index[0])[0] if index else None


def _prefix(ip):
    return 128 if ":" in ip else 32


def _quietly(func, *args, **kwargs):
    try:
        func(*args, **kwargs)
    except Exception:
        pass  # already gone

"""Setting a VE's network up at start and taking it down at stop.

``attach`` undoes its own steps when one fails; ``detach`` removes every
link, rule, proxy entry and qdisc a VE had, including what a crashed start
or a VE that died on its own left behind.

The host side's record (``wired``, a small JSON file per VE) says what a run
installed: written before the first step, marked clean once ``detach`` removed
it all. A start that finds it clean skips the search for leftovers (rule and
nftables listings, which grow with the number of VEs on the node), and a stop
deletes exactly what the record names. Without a record (a VE started by an
older engine) or with one left dirty (a crash), everything is looked for.
A stop leaves the devices to the kernel rather than deleting them: every
unregistration waits for RCU grace periods (~25 ms for a veth, ~40 for an
ifb here), and the VE's namespace takes its veth along when it dies anyway.
So a stop ``retire``s the host end (down, which drops its routes; renamed
``veth-gone<N>``, which frees the name for the next start; moved to the
VE's retired link group) and lets the namespace's teardown delete the pair;
the ifb stays for the next run (ve/net/shaping.py). The conntrack limit's
chains stay too (keyed by the link's name, they see no packet while the VE
is stopped): deleting them costs nft an RCU grace period, ~12 ms of every
stop, and the next start with the same limit only checks them. Only a VE
leaving the node, losing its rate or limit while stopped, or starting from
another namespace (``forget``), or losing its network while it runs, has
them deleted.
"""

import contextlib
import errno
import json
import os
import socket

from .. import fsutil
from ..kernel import netns, proc
from ..log import get as get_logger

from . import IPV6_GATEWAY, VE_IFNAME, conntrack, guard, host_ifname, \
    restore_ifname, rules, shaping, sysctl
from .rtnl import SCOPE_LINK, NetlinkError, Rtnl

log = get_logger(__name__)

UPLINK_ENV = "VE_NET_UPLINK"  # host interface whose neighbours learn VE addresses by proxy
GROUP_BASE = 0x56450000  # "VE" << 16: link groups VEID | this (VEIDs fit in 16 bits)
RETIRED_BASE = 0x56520000  # "VR" << 16: a VE's retired links, VEID | this
RETIRED_NAME = "veth-gone%d"  # the kernel picks the number
UNKNOWN = -1  # a record's conntrack limit while it changes: maybe installed, value unknown


def link_group(veid):
    """The link group of VE ``veid``'s host end of its veth (an older engine put its
    ifb there too)."""
    return GROUP_BASE | int(veid)


def retired_group(veid):
    """The link group of VE ``veid``'s retired links: one its namespace outlived (a
    process outside held it) goes with the VE's next search for leftovers or ``forget``."""
    return RETIRED_BASE | int(veid)


def prepare(cfg, wired):
    """The part of ``attach`` that needs no VE yet (a start does it before it makes
    the VE's init): what an earlier run left goes, this run is recorded at ``wired``,
    and the VE's conntrack limit is written meanwhile by nft. Return what
    ``attach`` takes; if it is not called, ``.finish()`` the result then ``detach``."""
    with Rtnl() as ipr:
        kept = _prepare(ipr, cfg, wired)
    return _limit(cfg, kept)


def attach(cfg, pid, wired, prepared=None):
    """Give running VE ``cfg.veid`` (init ``pid``) its veth, addresses, rules and limits;
    ``wired`` is the path of its host side's record, ``prepared`` what ``prepare``
    returned (None: it is called here)."""
    limit = prepared if prepared is not None else prepare(cfg, wired)
    with Rtnl() as ipr:
        try:
            try:
                _make_pair(ipr, cfg, VE_IFNAME, pid)
                _wire_host_side(ipr, cfg)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
                # A device, rule or route of the VE was there already (left by an
                # older engine, or a namespace the kernel is still tearing down).
                limit.finish(quietly=True)
                _remove_host_side(ipr, cfg.veid, cfg.ips)
                limit = _limit(cfg)
                _make_pair(ipr, cfg, VE_IFNAME, pid)
                _wire_host_side(ipr, cfg)
            limit.finish()  # before the VE has an address
        except BaseException:
            limit.finish(quietly=True)
            try:
                if _remove_host_side(ipr, cfg.veid, cfg.ips):
                    _mark_clean(wired)
            except Exception as exc:  # the first error is the one to report
                log.warning("VE %s: clean-up after a failed network setup: %s", cfg.veid, exc)
            raise
    _configure_inside(pid, cfg)


def pair_for_restore(cfg, wired):
    """Make the veth of a VE about to be restored, both ends here; return the name of
    the VE's end, which criu moves into the restored namespace as eth0 (keeping the
    addresses and routes it had inside)."""
    peer = restore_ifname(cfg.veid)
    with Rtnl() as ipr:
        # Everything is looked for: ``attach_restored`` cannot retry (criu has the
        # VE's end by then), so nothing may be in its way. Restores are rare.
        _prepare(ipr, cfg, wired, search=True)
        index = ipr.link_index(peer)
        if index is not None:  # left by a restore that crashed
            _delete_link(ipr, index=index)
        _retrying_leftovers(ipr, cfg, lambda: _make_pair(ipr, cfg, peer))
    return peer


def attach_restored(cfg):
    """The host side of a VE that criu restored onto ``pair_for_restore``'s veth.

    Its routes come only now, with the VE there to answer: until then its
    addresses were unreachable, and a client's retransmissions wait for it.
    """
    with Rtnl() as ipr:
        try:
            _limit(cfg).finish()  # first: the restored VE has its addresses already
            _wire_host_side(ipr, cfg)
        except BaseException:
            try:
                _remove_host_side(ipr, cfg.veid, cfg.ips)
            except Exception as exc:  # the first error is the one to report
                log.warning("VE %s: clean-up after a failed network setup: %s", cfg.veid, exc)
            raise


def _prepare(ipr, cfg, wired, search=False):
    """Remove what an earlier run left (all of it when unsure, or ``search``), then
    record this run (with the earlier run's addresses too if that removal failed in
    part, so that the next attempt still knows them). Return the conntrack limit the
    last stop kept installed (0: none)."""
    left = _recorded(wired)
    ips, kept, wanted = list(cfg.ips), 0, _limits_conntrack(cfg)
    if search or left is None or not left.get("clean"):
        earlier = left.get("ips", ()) if left else ()
        if not _remove_host_side(ipr, cfg.veid, earlier):
            ips += [ip for ip in earlier if ip not in ips]
    elif left.get("boot") != proc.boot_id():
        pass  # what the last stop kept went with the boot (or an older engine kept none)
    elif left.get("netns") != _here()["netns"]:  # kept where it ran last, not here
        try:
            if not forget(cfg.veid, wired):
                raise OSError("that network namespace is out of reach")
        except Exception as exc:  # tidying only: this start needs none of it
            log.warning("VE %s: what its last run kept on the host stays there: %s",
                        cfg.veid, exc)
    elif _installed_limit(left):
        kept = _installed_limit(left)
        if not wanted:
            conntrack.remove(cfg.veid, installed=True)  # kept, not wanted now
            kept = 0
    _record(wired, ips, conntrack=wanted, bridged=cfg.netmode != "routed")
    return kept


def _installed_limit(left):
    """The conntrack limit a record says is installed: an int, UNKNOWN, or 0 (an older
    engine wrote True for "some")."""
    value = left.get("conntrack")
    if type(value) is int:  # noqa: E721 (True is an int too, and True == 1)
        return value
    return UNKNOWN if value else 0


def _retrying_leftovers(ipr, cfg, steps):
    """Run ``steps``; if one finds a VE's device, rule or route there already (left
    by an older engine, or a namespace the kernel is still tearing down), remove
    everything of the VE and run them once more."""
    try:
        steps()
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        _remove_host_side(ipr, cfg.veid, cfg.ips)
        steps()


def _make_pair(ipr, cfg, peer, netns_pid=None):
    ipr.add_veth(host_ifname(cfg.veid), link_group(cfg.veid), peer, guard.ve_mac(cfg.veid),
                 netns_pid)


def _limits_conntrack(cfg):
    return cfg.limits.numconn if cfg.netmode == "routed" else 0


def _limit(cfg, kept=0):
    """The VE's conntrack limit (routed VEs with one), written by nft while the caller
    goes on: ``.finish()`` waits for it. The same limit ``kept`` installed by the last
    stop is only checked: rewriting it would delete its rules, and nft's RCU wait for
    that holds up the veth's creation (~3 ms a start)."""
    limit = _limits_conntrack(cfg)
    if limit and limit == kept:
        return conntrack.keeping(cfg.veid, limit)
    return conntrack.applying(cfg.veid, limit)


def _wire_host_side(ipr, cfg):
    """Everything on the host end of the VE's veth (just made) but the conntrack
    limit (``_limit``): addresses, bridge or routes, rules, shaping."""
    name = host_ifname(cfg.veid)
    routed = cfg.netmode == "routed"
    index = _index(ipr, name)
    sysctl.prepare_host(name, routed)
    if routed:
        ipr.add_address(index, IPV6_GATEWAY, 64)
    else:
        bridge = ipr.link_index(cfg.bridge)
        if bridge is None:
            raise OSError(f"bridge {cfg.bridge} does not exist")
        ipr.set_link(index, master=bridge)
        guard.apply(cfg.veid, cfg.ips)  # before the port comes up
    ipr.set_link(index, up=True)
    rules.install(ipr, name, cfg.ips)
    for ip in cfg.ips:
        _host_route(ipr, index, ip, routed, add=True)
    shaping.apply(ipr, cfg.veid, index, cfg.limits.rate, fresh=True)


def save_counters(veid, counters_path):
    """Add the running VE's link counters to its saved totals (just before it stops)."""
    from . import counters  # here and in traffic: a start needs none
    with Rtnl() as ipr:
        link = _link(ipr, host_ifname(veid))
        if link is not None:
            counters.save_link(counters_path, link)


def detach(veid, ips, wired, retire=False):
    """Remove the VE's host side: link, rules, proxy entries (qdiscs go with the
    link): what its record names, everything that could be there without one.
    The ifb stays (``forget``).

    ``retire``: the VE's namespace is about to die (its init is dead and the
    caller lets the namespace go): the link is retired, and dies with it.
    """
    left = _recorded(wired)
    if left is not None and left.get("clean"):
        return
    with Rtnl() as ipr:
        if left is None:
            done = _remove_host_side(ipr, veid, ips)
        else:
            done = _remove_recorded(ipr, veid, left, retire)
    if done:  # else the next start looks for everything
        _mark_clean(wired, conntrack=_installed_limit(left) if retire and left else 0)


def forget(veid, wired):
    """Delete what the VE keeps on the host between runs (its ifb and conntrack
    chains), in the namespace its host side was last in: the VE leaves the node, or
    lost its rate or limit. False if that namespace is out of reach (nothing done)."""
    left = _recorded(wired) or {}
    if left.get("boot", proc.boot_id()) != proc.boot_id():
        return True  # recorded before the node booted: nothing of it is left
    path = netns.path_of(left.get("netns"))
    if path is None:
        return False
    with netns.entered(path):  # nft, run from this thread, runs in there too
        with Rtnl() as ipr:
            shaping.drop_ifb(ipr, veid)
            _delete_links(ipr, veid)  # a leftover veth end, an older engine's ifb
        if _installed_limit(left):
            conntrack.remove(veid, installed=True)
        if left:
            _mark_clean(wired)
    return True


def traffic(veid, counters_path):
    """Totals of all runs so far, including the running one."""
    from . import counters
    with Rtnl() as ipr:
        return counters.total(counters_path, _link(ipr, host_ifname(veid)))


def change_ips(cfg, pid, added, removed, wired):
    """Add and remove addresses of a running VE (host side and inside)."""
    name, routed = host_ifname(cfg.veid), cfg.netmode == "routed"
    left = _recorded(wired)
    if left is not None and not left.get("clean"):  # none: started by an older engine
        _record(wired, [*cfg.ips, *removed], conntrack=left.get("conntrack", UNKNOWN),
                bridged=not routed)
    with Rtnl() as ipr:
        index = _index(ipr, name)
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
        inside = _index(ns, VE_IFNAME)
        for ip in added:
            ns.add_address(inside, ip, _prefix(ip))
        for ip in removed:
            _quietly(ns.delete_address, inside, ip, _prefix(ip))
        # The first address of a family needs that family's default route.
        for v6 in (False, True):
            if not any((":" in ip) == v6 for ip in before) and \
                    any((":" in ip) == v6 for ip in added):
                _default_route(ns, inside, v6, cfg.netmode == "routed")


def peer_index(veid):
    """The ifindex of the VE's eth0 in its namespace (its host-side veth's peer), or None."""
    with Rtnl() as ipr:
        link = ipr.link_info(host_ifname(veid))
        return None if link is None else link["peer"]


def set_numconn(veid, limit, wired):
    """Change a running routed VE's conntrack limit (0 removes it)."""
    left = _recorded(wired)
    ips, bridged = (left.get("ips", ()), left.get("bridged", False)) if left else ((), False)
    if left is not None and limit:
        # Before the change: a stop must know there is a limit to remove.
        _record(wired, ips, conntrack=UNKNOWN, bridged=bridged)
    conntrack.apply(veid, limit)
    if left is not None:
        _record(wired, ips, conntrack=limit, bridged=bridged)


def set_rate(veid, rate_mbit):
    with Rtnl() as ipr:
        index = ipr.link_index(host_ifname(veid))
        if index is not None:
            shaping.apply(ipr, veid, index, rate_mbit)


def _configure_inside(pid, cfg):
    """Addresses and default routes on the VE's eth0, from inside its namespace."""
    with _inside(pid) as ns:
        index = _index(ns, VE_IFNAME)
        for ip in cfg.ips:
            ns.add_address(index, ip, _prefix(ip))
        ns.set_link(index, up=True)
        for v6 in (False, True):
            if any((":" in ip) == v6 for ip in cfg.ips):
                _default_route(ns, index, v6, cfg.netmode == "routed")


def _default_route(ns, index, v6, routed):
    """IPv4: on-link default (the host side answers ARP); IPv6: via fe80::1 when routed."""
    if not v6:
        ns.route(True, None, 0, index, scope=SCOPE_LINK, family=socket.AF_INET)
    else:
        ns.route(True, None, 0, index, gateway=IPV6_GATEWAY if routed else None,
                 family=socket.AF_INET6)


@contextlib.contextmanager
def _inside(pid):
    """An Rtnl whose netlink socket lives in the network namespace of ``pid``.

    The calling thread enters that namespace just long enough to open the
    socket.
    """
    with netns.entered(f"/proc/{pid}/ns/net"):
        ns = Rtnl()
    with ns:
        yield ns


def _host_route(ipr, index, ip, routed, add):
    uplink = os.environ.get(UPLINK_ENV)
    if routed:
        ipr.route(add, ip, _prefix(ip), index)
    if routed and uplink:
        up = ipr.link_index(uplink)
        if up is not None:
            if add and ":" in ip:
                sysctl.write(f"ipv6/conf/{uplink}/proxy_ndp", 1)
            ipr.proxy_neighbour(add, ip, up)


def _remove_host_side(ipr, veid, ips=()):
    """Everything a VE's host side could hold, looked for (listings of rules and
    tables): for a host side without a clean record. True if every step succeeded."""
    name = host_ifname(veid)
    done = _step(rules.remove, ipr, name)
    done &= _step(guard.remove, veid)
    done &= _step(conntrack.remove, veid)
    done &= _remove_proxies(ipr, ips)
    _delete_links(ipr, veid)
    index = ipr.link_index(name)
    if index is not None:  # made without a group (older engine)
        _delete_link(ipr, index=index)
    return done


def _remove_recorded(ipr, veid, left, retire=False):
    """What the record of VE ``veid``'s host side names, without listings (the link
    retired if ``retire``, see ``detach``). True if every step succeeded."""
    ips = left.get("ips", ())
    done, limit = True, None
    if left.get("conntrack") and not retire:
        try:  # nft's removal runs beside the links' (each waits for RCU: then only once)
            limit = conntrack.removing(veid, installed=True)
        except OSError as exc:
            done = _failed("conntrack removal", exc)
    try:
        rules.remove_known(ipr, host_ifname(veid), ips)
        if left.get("bridged"):
            done &= _step(guard.remove, veid)
        done &= _remove_proxies(ipr, ips)
        if retire:
            _retire_link(ipr, veid)
        else:
            _delete_links(ipr, veid)
    finally:
        if limit is not None:
            done &= _step(limit.finish)
    return done


def _remove_proxies(ipr, ips):
    """Delete the proxy entries of ``ips`` on the uplink; True if none is left."""
    uplink = os.environ.get(UPLINK_ENV)
    up = ipr.link_index(uplink) if uplink and ips else None
    done = True
    for ip in ips:
        if up is not None:
            try:
                ipr.proxy_neighbour(False, ip, up)
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:
                    done = _failed("proxy entry removal", exc)
    return done


def _step(func, *args):
    """Run one clean-up step that may fail without stopping the others; True if it
    succeeded (else the record stays dirty and the next start looks for everything)."""
    try:
        func(*args)
        return True
    except Exception as exc:
        return _failed(getattr(func, "__qualname__", "clean-up"), exc)


def _failed(what, exc):
    log.warning("host-side clean-up, %s: %s", what, exc)
    return False


def _delete_links(ipr, veid):
    """The VE's veth end (and an older engine's ifb) in one request, then its retired
    links; a veth takes the VE's eth0, host routes and qdiscs with it."""
    _delete_link(ipr, group=link_group(veid))
    _delete_link(ipr, group=retired_group(veid))


def _retire_link(ipr, veid):
    """Leave the VE's veth end to its dying namespace (see the module's docstring)."""
    index = ipr.link_index(host_ifname(veid))
    if index is None:
        return  # the namespace took it already
    try:
        ipr.retire_link(index, RETIRED_NAME, retired_group(veid))
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT):
            raise


def _delete_link(ipr, **which):
    try:
        ipr.delete_link(**which)
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT):
            raise  # ENODEV: the VE's namespace, dying, took the pair along meanwhile


def _record(wired, ips, conntrack, bridged):
    os.makedirs(os.path.dirname(wired), mode=0o700, exist_ok=True)
    fsutil.atomic_write(wired, json.dumps({"ips": list(ips), "conntrack": conntrack,
                                           "bridged": bridged, **_here()}), durable=False)


def _mark_clean(wired, conntrack=0):
    """Nothing of a run left but what stays between runs: the ifb (if the VE has a
    rate) and the chains of conntrack limit ``conntrack`` (0: none)."""
    try:
        fsutil.atomic_write(wired, json.dumps({"clean": True, "conntrack": conntrack,
                                               **_here()}), durable=False)
    except OSError:
        pass  # no directory: nothing was recorded either


def _here():
    """Where a record is written: the calling thread's network namespace (where the
    host side is made or taken apart: ``forget`` goes there) and this boot."""
    return {"netns": netns.identity("/proc/thread-self/ns/net"), "boot": proc.boot_id()}


def _recorded(wired):
    """The record at ``wired``: {"ips", "conntrack", "bridged", "netns"} or {"clean": True,
    "netns", "conntrack"}, both with "boot" ("conntrack": the limit installed, 0 for none,
    UNKNOWN); None if
    there is none (or it cannot be read: then nothing is assumed)."""
    try:
        with open(wired, "rb") as f:
            left = json.loads(f.read(65536))
        return left if isinstance(left, dict) else None
    except (OSError, ValueError):
        return None


def _link(ipr, name):
    """Link ``name`` as ``counters`` reads one ({"index", "IFLA_STATS64"}), or None."""
    link = ipr.link_info(name)
    return None if link is None else {"index": link["index"], "IFLA_STATS64": link["stats"]}


def _index(ipr, name):
    index = ipr.link_index(name)
    if index is None:
        raise OSError(f"link {name} is gone")
    return index


def _prefix(ip):
    return 128 if ":" in ip else 32


def _quietly(func, *args, **kwargs):
    try:
        func(*args, **kwargs)
    except Exception:
        pass  # already gone

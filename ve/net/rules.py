"""Anti-spoofing with policy-routing rules, for IPv4 and IPv6 alike.

For packets arriving on a VE's host-side link, one rule per VE address (and
one for IPv6 link-local sources, which neighbour discovery needs) goes on to
the normal lookups; the next rule drops everything else from that link
silently (a blackhole: a "prohibit" rule would send an ICMP error to the
forged source, making the node a reflector against whoever owns it).
A VE that adds an address it was not given can send from it, but nothing it
sends from there is routed, nor delivered to the host: the kernel's "local"
rule, which normally comes first (priority 0) and would deliver to host
addresses before any check, is moved behind these rules.

Rules name the link, so they outlive it and are removed explicitly. All VEs
share the priorities: the incoming link tells their rules apart.
"""

import errno
import socket

from .rtnl import FR_ACT_BLACKHOLE, FR_ACT_GOTO, FR_ACT_TO_TBL, NetlinkError

ALLOW_PRIORITY = 20000
PROHIBIT_PRIORITY = 20001
LOCAL_PRIORITY = 20002
LOCAL_TABLE = 255
FAMILIES = (socket.AF_INET, socket.AF_INET6)


def install(ipr, ifname, ips):
    _move_local_rule(ipr)
    for family, src, length in _sources(ips):
        _allow(ipr, True, family, ifname, src, length)
    for family in FAMILIES:
        ipr.rule(True, family, PROHIBIT_PRIORITY, FR_ACT_BLACKHOLE, iifname=ifname)


def allow(ipr, ifname, ip, add=True):
    """Allow (or stop allowing) one more source address on a running VE's link."""
    family, src, length = next(_sources([ip], link_local=False))
    _allow(ipr, add, family, ifname, src, length)


def _allow(ipr, add, family, ifname, src, length):
    ipr.rule(add, family, ALLOW_PRIORITY, FR_ACT_GOTO, iifname=ifname, src=src,
             src_len=length, goto=LOCAL_PRIORITY)


def _move_local_rule(ipr):
    """Put the host's "lookup local" rule at LOCAL_PRIORITY, behind the VE rules (once).

    Asked of the kernel rather than looked up in a listing of all rules, which
    grows with the VEs: adding an existing rule is EEXIST, deleting a missing
    one ENOENT."""
    for family in FAMILIES:
        _unless(errno.EEXIST, ipr.rule, True, family, LOCAL_PRIORITY, FR_ACT_TO_TBL,
                table=LOCAL_TABLE)
        _unless(errno.ENOENT, ipr.rule, False, family, 0, FR_ACT_TO_TBL, table=LOCAL_TABLE)


def remove_known(ipr, ifname, ips):
    """Delete the rules ``install`` made for ``ifname`` and ``ips`` (and those ``allow``
    added for them), without listing; rules already gone are skipped."""
    for family, src, length in _sources(ips):
        _unless(errno.ENOENT, _allow, ipr, False, family, ifname, src, length)
    for family in FAMILIES:
        _unless(errno.ENOENT, ipr.rule, False, family, PROHIBIT_PRIORITY, FR_ACT_BLACKHOLE,
                iifname=ifname)


def _unless(code, func, *args, **kwargs):
    """Call ``func``; a netlink error ``code`` means it was done already."""
    try:
        func(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code != code:
            raise


def remove(ipr, ifname):
    """Delete every rule that names ``ifname`` (also those of a crashed start)."""
    for family in FAMILIES:
        for rule in ipr.rules(family):
            if rule["iifname"] == ifname:
                ipr.rule(False, family, rule["priority"], rule["action"], table=rule["table"],
                         iifname=ifname, src=rule["src"], src_len=rule["src_len"],
                         goto=rule["goto"])


def _sources(ips, link_local=True):
    if link_local:
        yield socket.AF_INET6, "fe80::", 10
    for ip in ips:
        if ":" in ip:
            yield socket.AF_INET6, ip, 128
        else:
            yield socket.AF_INET, ip, 32

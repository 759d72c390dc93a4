"""Anti-spoofing with policy-routing rules, for IPv4 and IPv6 alike.

For packets arriving on a VE's host-side link, one rule per VE address (and
one for IPv6 link-local sources, which neighbour discovery needs) looks up
the main table; the next rule prohibits everything else from that link. A VE
that adds an address it was not given can send from it, but nothing it sends
from there is routed or delivered on the host. Rules name the link, so they
outlive it and are removed explicitly. All VEs share the two priorities: the
incoming link tells their rules apart.
"""

import socket

ALLOW_PRIORITY = 20000
PROHIBIT_PRIORITY = 20001
MAIN_TABLE = 254


def install(ipr, ifname, ips):
    for family, src, length in _sources(ips):
        ipr.rule("add", family=family, iifname=ifname, src=src, src_len=length,
                 table=MAIN_TABLE, priority=ALLOW_PRIORITY)
    for family in (socket.AF_INET, socket.AF_INET6):
        ipr.rule("add", family=family, iifname=ifname, action="FR_ACT_PROHIBIT",
                 priority=PROHIBIT_PRIORITY)


def allow(ipr, ifname, ip, add=True):
    """Allow (or stop allowing) one more source address on a running VE's link."""
    family, src, length = next(_sources([ip], link_local=False))
    ipr.rule("add" if add else "del", family=family, iifname=ifname, src=src, src_len=length,
             table=MAIN_TABLE, priority=ALLOW_PRIORITY)


def remove(ipr, ifname):
    """Delete every rule that names ``ifname`` (also those of a crashed start)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        for rule in ipr.get_rules(family=family):
            if rule.get("FRA_IIFNAME") == ifname:
                ipr.rule("del", family=family, priority=rule.get("FRA_PRIORITY"),
                         iifname=ifname, src=rule.get("FRA_SRC"), src_len=rule["src_len"],
                         action=rule["action"], table=rule["table"])


def _sources(ips, link_local=True):
    if link_local:
        yield socket.AF_INET6, "fe80::", 10
    for ip in ips:
        if ":" in ip:
            yield socket.AF_INET6, ip, 128
        else:
            yield socket.AF_INET, ip, 32

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

import socket

ALLOW_PRIORITY = 20000
PROHIBIT_PRIORITY = 20001
LOCAL_PRIORITY = 20002
LOCAL_TABLE = 255
FAMILIES = (socket.AF_INET, socket.AF_INET6)


def install(ipr, ifname, ips):
    _move_local_rule(ipr)
    for family, src, length in _sources(ips):
        _allow(ipr, "add", family, ifname, src, length)
    for family in FAMILIES:
        ipr.rule("add", family=family, iifname=ifname, action="FR_ACT_BLACKHOLE",
                 priority=PROHIBIT_PRIORITY)


def allow(ipr, ifname, ip, add=True):
    """Allow (or stop allowing) one more source address on a running VE's link."""
    family, src, length = next(_sources([ip], link_local=False))
    _allow(ipr, "add" if add else "del", family, ifname, src, length)


def _allow(ipr, command, family, ifname, src, length):
    ipr.rule(command, family=family, iifname=ifname, src=src, src_len=length,
             action="FR_ACT_GOTO", goto=LOCAL_PRIORITY, priority=ALLOW_PRIORITY)


def _move_local_rule(ipr):
    """Put the host's "lookup local" rule at LOCAL_PRIORITY, behind the VE rules (once)."""
    for family in FAMILIES:
        rules = [(r.get("FRA_PRIORITY", 0), r.get("FRA_TABLE", r["table"]))
                 for r in ipr.get_rules(family=family)]
        if (LOCAL_PRIORITY, LOCAL_TABLE) not in rules:
            ipr.rule("add", family=family, priority=LOCAL_PRIORITY, table=LOCAL_TABLE)
        if (0, LOCAL_TABLE) in rules:
            ipr.rule("del", family=family, priority=0, table=LOCAL_TABLE)


def remove(ipr, ifname):
    """Delete every rule that names ``ifname`` (also those of a crashed start)."""
    for family in FAMILIES:
        for rule in ipr.get_rules(family=family):
            if rule.get("FRA_IIFNAME") == ifname:
                extra = {"goto": rule.get("FRA_GOTO")} if rule.get("FRA_GOTO") else {}
                ipr.rule("del", family=family, priority=rule.get("FRA_PRIORITY"),
                         iifname=ifname, src=rule.get("FRA_SRC"), src_len=rule["src_len"],
                         action=rule["action"], table=rule["table"], **extra)


def _sources(ips, link_local=True):
    if link_local:
        yield socket.AF_INET6, "fe80::", 10
    for ip in ips:
        if ":" in ip:
            yield socket.AF_INET6, ip, 128
        else:
            yield socket.AF_INET, ip, 32

"""Per-VE rate limits with tc, both ways, at ``rate`` Mbit/s.

VE download: a tbf qdisc at the root of the host-side link. VE upload: the
host side's ingress redirects everything (u32 match-all, mirred) to
``ifb<VEID>``, whose root tbf shapes it. Shaping (queueing) rather than
policing also keeps TCP close to the limit.
"""

from pyroute2 import protocols

from . import ifb_ifname

ROOT = 0x10000
INGRESS = 0xFFFF0000
TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1


def burst_bytes(rate_mbit):
    """Bucket size: 10 ms at the rate, at least 16 full-size frames."""
    return max(rate_mbit * 1_000_000 // 8 // 100, 16 * 1514)


def apply(ipr, veid, host_index, rate_mbit):
    """(Re)apply the limit on a running VE's host-side link; 0 removes it."""
    clear(ipr, veid, host_index)
    if not rate_mbit:
        return
    tbf = {"rate": f"{rate_mbit}mbit", "burst": burst_bytes(rate_mbit), "latency": "50ms"}
    ipr.tc("add", "tbf", host_index, ROOT, **tbf)
    ipr.link("add", ifname=ifb_ifname(veid), kind="ifb")
    ifb = ipr.link_lookup(ifname=ifb_ifname(veid))[0]
    ipr.link("set", index=ifb, state="up")
    ipr.tc("add", "tbf", ifb, ROOT, **tbf)
    ipr.tc("add", "ingress", host_index, INGRESS)
    ipr.tc("add-filter", "u32", host_index, parent=INGRESS, prio=10, target=1,
           protocol=protocols.ETH_P_ALL, keys=["0x0/0x0+0"],
           action=dict(kind="mirred", direction="egress", action="redirect", ifindex=ifb))


def clear(ipr, veid, host_index=None):
    """Remove the VE's qdiscs and its ifb (what a crashed start left, too)."""
    if host_index is not None:
        for handle, parent in ((ROOT, TC_H_ROOT), (INGRESS, TC_H_INGRESS)):
            try:
                ipr.tc("del", index=host_index, handle=handle, parent=parent)
            except Exception:
                pass  # not there
    for index in ipr.link_lookup(ifname=ifb_ifname(veid)):
        ipr.link("del", index=index)

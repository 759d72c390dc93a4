"""Per-VE rate limits with tc, both ways, at ``rate`` Mbit/s.

VE download: a tbf qdisc at the root of the host-side link. VE upload: the
host side's ingress redirects everything (u32 match-all, mirred) to
``ifb<VEID>``, whose root tbf shapes it. Shaping (queueing) rather than
policing also keeps TCP close to the limit.
"""

from . import ifb_ifname

ROOT = 0x10000
INGRESS = 0xFFFF0000
TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
LATENCY = 0.05  # s a packet may wait in the bucket's queue


def burst_bytes(rate_mbit):
    """Bucket size: 10 ms at the rate, at least 16 full-size frames."""
    return max(rate_mbit * 1_000_000 // 8 // 100, 16 * 1514)


def apply(ipr, veid, host_index, rate_mbit, group, fresh=False):
    """(Re)apply the limit on a running VE's host-side link; 0 removes it. The ifb
    joins link ``group`` (the VE's: deleted with its veth). ``fresh``: the link was
    just made, there is nothing to clear."""
    if not fresh:
        clear(ipr, veid, host_index)
    if not rate_mbit:
        return
    tbf = (rate_mbit * 1_000_000 // 8, burst_bytes(rate_mbit), LATENCY)
    ipr.add_tbf(host_index, *tbf)
    ifb = ipr.add_link(ifb_ifname(veid), "ifb", group, up=True)
    ipr.add_tbf(ifb, *tbf)
    ipr.add_ingress(host_index)
    ipr.redirect_ingress(host_index, ifb)


def clear(ipr, veid, host_index=None):
    """Remove the VE's qdiscs and its ifb (what a crashed start left, too)."""
    if host_index is not None:
        for handle, parent in ((ROOT, TC_H_ROOT), (INGRESS, TC_H_INGRESS)):
            try:
                ipr.delete_qdisc(host_index, handle, parent)
            except OSError:
                pass  # not there
    index = ipr.link_index(ifb_ifname(veid))
    if index is not None:
        ipr.delete_link(index)

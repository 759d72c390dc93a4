"""Per-VE rate limits with tc, both ways, at ``rate`` Mbit/s.

VE download: a tbf qdisc at the root of the host-side link. VE upload: the
host side's ingress redirects everything (u32 match-all, mirred) to
``ifb<VEID>``, whose root tbf shapes it. Shaping (queueing) rather than
policing also keeps TCP close to the limit.

The ifb outlives the VE's runs: deleting a device waits for RCU grace
periods (~40 ms here), which every stop would pay. It stays, idle (nothing
is redirected to it), while the VE is stopped; the next start gives it a new
bucket only if the rate changed (replacing one waits for RCU too). It goes
when the VE's rate or network goes (``drop_ifb``), and with the VE
(``links.forget``).
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


def apply(ipr, veid, host_index, rate_mbit, fresh=False):
    """(Re)apply the limit on a running VE's host-side link; 0 removes it, ifb
    included. ``fresh``: the link was just made, it has no qdisc to clear."""
    if not fresh:
        _clear_link(ipr, host_index)
    if not rate_mbit:
        drop_ifb(ipr, veid)
        return
    tbf = (rate_mbit * 1_000_000 // 8, burst_bytes(rate_mbit), LATENCY)
    ipr.add_tbf(host_index, *tbf)
    ifb = ipr.link_index(ifb_ifname(veid))
    if ifb is None:
        ifb = ipr.add_link(ifb_ifname(veid), "ifb", 0, up=True)
        ipr.add_tbf(ifb, *tbf)
    else:  # kept from an earlier run: so is its bucket, unless the rate changed
        if ipr.root_tbf_rate(ifb) != tbf[0]:
            ipr.add_tbf(ifb, *tbf, replace=True)  # waits for RCU: only when it changes
        ipr.set_link(ifb, up=True)
    ipr.add_ingress(host_index)
    ipr.redirect_ingress(host_index, ifb)


def drop_ifb(ipr, veid):
    """Delete the VE's ifb, if it has one."""
    index = ipr.link_index(ifb_ifname(veid))
    if index is not None:
        ipr.delete_link(index)


def _clear_link(ipr, host_index):
    for handle, parent in ((ROOT, TC_H_ROOT), (INGRESS, TC_H_INGRESS)):
        try:
            ipr.delete_qdisc(host_index, handle, parent)
        except OSError:
            pass  # not there

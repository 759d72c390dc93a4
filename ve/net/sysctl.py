"""Per-namespace sysctls under /proc/sys/net (they follow the caller's netns)."""

import os


def write(path, value):
    """Write ``value`` to /proc/sys/net/<path>; return the old value."""
    full = os.path.join("/proc/sys/net", path)
    with open(full) as f:
        old = f.read().strip()
    if old != str(value):
        with open(full, "w") as f:
            f.write(str(value))
    return old


def prepare_host(ifname, routed):
    """Settings of a VE's host-side link (and, routed, forwarding on this host)."""
    write(f"ipv6/conf/{ifname}/accept_ra", 0)  # a VE's router advertisements are ignored
    write(f"ipv6/conf/{ifname}/autoconf", 0)
    if routed:
        write(f"ipv4/conf/{ifname}/proxy_arp", 1)
        write(f"ipv4/neigh/{ifname}/proxy_delay", 0)  # answer at once, not after ~0.8 s
        write(f"ipv4/conf/{ifname}/rp_filter", 1)
        write(f"ipv6/conf/{ifname}/disable_ipv6", 0)
        write("ipv4/ip_forward", 1)
        write("ipv6/conf/all/forwarding", 1)

"""VE networking with pyroute2: one veth pair per running VE.

Routed mode (OpenVZ venet style, the default): the VE side (``eth0`` in the
VE) holds the VE's addresses as /32 and /128 with on-link default routes; the
host side (``veth<VEID>``) has no IPv4 address, answers ARP by proxy, owns
fe80::1 as the VEs' IPv6 gateway, and carries one host route per VE address.
Bridged mode: the host side joins a bridge instead.

Anti-spoofing: routed, policy-routing rules drop anything the VE sends from
an address it was not given (``rules``); bridged, an nftables bridge table per
port does (``guard``), and also stops foreign ARP/NDP answers and router
advertisements. Both modes: the host ignores router advertisements from the
VE, tc shapes both directions (egress: tbf on the host side; ingress: the
VE's traffic is redirected to ``ifb<VEID>`` and shaped there), and the
host-side link counters are added up across restarts.

The "host" is whatever network namespace the engine runs in: tests run the
engine in a namespace they create. A start and a stop speak rtnetlink
themselves (``rtnl``) and run ``nft`` for the nftables parts; pyroute2, whose
import alone costs ~0.1 s, serves only the sampler and conntrack counts.
"""

VE_IFNAME = "eth0"
IPV6_GATEWAY = "fe80::1"


def host_ifname(veid):
    return f"veth{veid}"


def restore_ifname(veid):
    """The VE's end of its veth, on the host side until criu moves it into the VE as eth0."""
    return f"vr{veid}"


def ifb_ifname(veid):
    return f"ifb{veid}"


def has_network(cfg):
    """True if the VE gets a veth at start (it has addresses or is bridged)."""
    return bool(cfg.ips) or cfg.netmode == "bridged"


def kept_on_host(cfg):
    """What a stopped VE with config ``cfg`` keeps on the host between runs
    (ve/net/links.py): {"ifb"} with a rate, {"conntrack"} with a routed VE's limit."""
    if not has_network(cfg):
        return set()
    return ({"ifb"} if cfg.limits.rate else set()) | \
        ({"conntrack"} if cfg.limits.numconn and cfg.netmode == "routed" else set())

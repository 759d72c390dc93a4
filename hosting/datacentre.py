"""The simulated data-centre segment that the nodes of one machine share.

A bridge (``br-dc``) in a network namespace of its own; each node's namespace
is joined to it by a veth pair whose node end is ``dc0`` with address
198.18.255.<node number>/24 (the bridge has .254, the "router" a real data
centre would have there). Node workers run with VE_NET_UPLINK=dc0, so a node
answers ARP/NDP on dc0 for the addresses of the VEs it runs: whichever node
runs a VE is where the segment sends its traffic, and a migrated VE keeps its
addresses. The nodes' migration sshds listen on their dc0 addresses.

Nothing here leads off the machine: the namespaces have no default route and
no link to the machine's own network; every route is for the test ranges
VEs use (198.18.0.0/15, fd00::/8). Every step is idempotent, so a ``make run``
after Ctrl-C or a crash takes over (or completes) what the last one left.
Programs run with argument lists, never through a shell.
"""

import subprocess

UPLINK = "dc0"  # the node end of its link to the segment (the engine's VE_NET_UPLINK)
BRIDGE = "br-dc"
NETWORK = "198.18.255"
PREFIX = 24
ROUTER = f"{NETWORK}.254"
VE_RANGES = ("198.18.0.0/15", "fd00::/8")  # where VE addresses come from


def node_address(index):
    """Node ``index``'s (1, 2, ...) address on the segment."""
    if not 1 <= index < 254:
        raise ValueError(f"node number {index} does not fit the data-centre /24")
    return f"{NETWORK}.{index}"


def _ip(*argv, check=True):
    return subprocess.run(["ip", *argv], check=check, capture_output=True, text=True)


def _links(netns):
    out = _ip("-n", netns, "-o", "link", "show")
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def _addresses(netns, ifname):
    out = _ip("-n", netns, "-o", "addr", "show", "dev", ifname)
    return {part for line in out.stdout.splitlines() for part in line.split() if "/" in part}


def _sysctl(netns, name, value):
    subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "sysctl", "-q", "-w",
                    f"{name}={value}"], check=True, capture_output=True)


def namespaces():
    """Names of the machine's named network namespaces."""
    out = _ip("netns", "list")
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def ensure_segment(dc_netns):
    """The segment's namespace with its bridge, up, with the router address and routes
    to the VE ranges through the bridge (it reaches any VE at whichever node runs it)."""
    if dc_netns not in namespaces():
        _ip("netns", "add", dc_netns)
    _ip("-n", dc_netns, "link", "set", "lo", "up")
    if BRIDGE not in _links(dc_netns):
        _ip("-n", dc_netns, "link", "add", BRIDGE, "type", "bridge")
    if f"{ROUTER}/{PREFIX}" not in _addresses(dc_netns, BRIDGE):
        _ip("-n", dc_netns, "addr", "add", f"{ROUTER}/{PREFIX}", "dev", BRIDGE)
    _ip("-n", dc_netns, "link", "set", BRIDGE, "up")
    for cidr in VE_RANGES:
        _ip("-n", dc_netns, "route", "replace", cidr, "dev", BRIDGE)


def join(dc_netns, node_netns, index):
    """Link node ``index``'s namespace (made already) to the segment as ``dc0``; True
    if the link was made now (then see ``forget_neighbours``).

    The pair is made again if either namespace was made anew since (a pair dies
    with the namespace of either end). In the node's namespace the VE ranges are
    on-link through dc0, so its VEs reach those of other nodes directly, and
    dc0 answers ARP only for its own address: every node has the pools'
    gateways on its loopback, which the segment must not see.
    """
    outer = f"node{index}"
    made = UPLINK not in _links(node_netns) or outer not in _links(dc_netns)
    if made:
        _ip("-n", node_netns, "link", "del", UPLINK, check=False)
        _ip("-n", dc_netns, "link", "del", outer, check=False)
        _ip("-n", dc_netns, "link", "add", outer, "type", "veth", "peer", "name", UPLINK,
            "netns", node_netns)
    _ip("-n", dc_netns, "link", "set", outer, "master", BRIDGE, "up")
    _sysctl(node_netns, f"net.ipv4.conf.{UPLINK}.arp_ignore", 1)
    address = f"{node_address(index)}/{PREFIX}"
    if address not in _addresses(node_netns, UPLINK):
        _ip("-n", node_netns, "addr", "add", address, "dev", UPLINK)
    _ip("-n", node_netns, "link", "set", UPLINK, "up")
    for cidr in VE_RANGES:
        _ip("-n", node_netns, "route", "replace", cidr, "dev", UPLINK)
    return made


def forget_neighbours(netns, ifname=UPLINK):
    """Drop the learnt neighbours on ``ifname`` (not the proxy entries of VE addresses):
    a link made anew has a new MAC address, which the others would otherwise take
    several seconds to notice."""
    _ip("-n", netns, "neigh", "flush", "dev", ifname)


def remove(netns):
    """Remove a named network namespace if it exists (its links go with it)."""
    if netns in namespaces():
        _ip("netns", "delete", netns)

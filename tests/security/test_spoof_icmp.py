"""A VE's forged packets get no answer from the node (catalogue class: the node as a
reflector). Separate from test_catalogue.py: it needs the engine tests' host network."""

from tests.engine.conftest import hostnet  # noqa: F401  (fixture)
from tests.engine.test_network import A, B, HOST_V4, HOST_V6, make, ping, start, wait_past_dad
from tests.security.test_escape import ok

OUT = "vetestout0"  # stands for the node's uplink: a default route the errors could take
# (a veth pair: this kernel has no dummy links)


def _unreachables_sent(run):
    """(IPv4, IPv6) destination-unreachable messages the host namespace sent so far."""
    v4 = run("cat", "/proc/net/snmp").stdout.splitlines()
    names, values = [line.split() for line in v4 if line.startswith("Icmp:")][:2]
    v6 = dict(line.split() for line in run("cat", "/proc/net/snmp6").stdout.splitlines())
    return int(values[names.index("OutDestUnreachs")]), int(v6["Icmp6OutDestUnreachs"])


def test_spoofed_packets_are_dropped_without_an_icmp_answer(engine, hostnet):
    """A VE sending from an address it was not given gets nothing through, and the node
    answers nothing either: an ICMP "prohibited" would go to the forged source (out of
    the node's default route), turning it into a reflector against that address."""
    make(engine, A)
    make(engine, B)
    start(hostnet, 401, 402)
    hostnet.run("ip", "link", "add", OUT, "type", "veth", "peer", "name", OUT + "p")
    try:
        hostnet.run("ip", "link", "set", OUT + "p", "up")
        hostnet.run("ip", "link", "set", OUT, "up")
        hostnet.run("ip", "route", "add", "default", "dev", OUT)
        hostnet.run("ip", "-6", "route", "add", "default", "dev", OUT)
        ok(engine, 401, "ip addr add 198.18.7.99/32 dev eth0 && "
                        "ip -6 addr add fd00:7::99/128 dev eth0")
        wait_past_dad(engine, 401, "fd00:7::99")
        for target in (B[1][0], HOST_V4, B[1][1], HOST_V6):  # neighbours known first
            assert ping(engine, 401, target, source=A[1][0 if "." in target else 1], count=3)
        before = _unreachables_sent(hostnet.run)
        for target in (B[1][0], HOST_V4):
            assert not ping(engine, 401, target, source="198.18.7.99")
        for target in (B[1][1], HOST_V6):
            assert not ping(engine, 401, target, source="fd00:7::99")
        assert _unreachables_sent(hostnet.run) == before
    finally:
        hostnet.run("ip", "link", "del", OUT, check=False)

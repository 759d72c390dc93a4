"""VE networking for real: veth pairs, routes, rules and tc in a network namespace
the test creates to play the node's host network (addresses from 198.18.0.0/15
and fd00::/8; nothing leaves that namespace).

Verbs that touch the host side (start, stop, set, traffic) run inside that
namespace through ``HostNet.engine``; ``exec`` works from anywhere.
"""

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from ve import Limits, VEConfig
from ve.net import guard

from .hostnet import HOST_V4, HOST_V6, RETIRED, ROOT_DIR

A = (401, ("198.18.7.11", "fd00:7::11"))
B = (402, ("198.18.7.12", "fd00:7::12"))


def make(engine, spec, **kw):
    veid, ips = spec
    engine.create(VEConfig(veid, f"ve{veid}.example", "busybox", Limits(**kw.pop("limits", {})),
                           ips=ips, **kw))
    return veid


def ping(hostnet_or_engine, src_veid, target, source=None, count=1):
    """True if ``target`` answers at least one of ``count`` pings from the VE."""
    argv = ["ping", "-c", str(count), "-W", "2"] + (["-I", source] if source else []) + [target]
    return hostnet_or_engine.exec(src_veid, argv).returncode == 0


RA_PREFIX = "fd00:99:"


def send_router_advertisement(engine, veid):
    """Send, from inside the VE's network namespace, a router advertisement
    offering prefix fd00:99::/64 for address autoconfiguration."""
    code = textwrap.dedent("""
        import socket, struct, time
        ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
        prefix = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0)
        prefix += socket.inet_pton(socket.AF_INET6, "fd00:99::")
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        scope = socket.if_nametoindex("eth0")

        def link_local_ready():  # eth0's fe80:: address has passed DAD
            for line in open("/proc/net/if_inet6"):
                addr, _, _, scope_id, flags, name = line.split()
                if name == "eth0" and scope_id == "20" and not int(flags, 16) & 0x40:
                    return True

        for _ in range(100):
            if link_local_ready():
                break
            time.sleep(0.1)
        s.sendto(ra + prefix, ("ff02::1", 0, 0, scope))
        print("sent")""")
    pid = engine.status(veid).init_pid
    out = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "sent", out.stderr
    time.sleep(1)  # let receivers process it


def _wait_for(predicate, seconds=5):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def wait_past_dad(engine, veid, address, seconds=10):
    """Wait until ``address`` in the VE has left duplicate address detection
    (no longer "tentative" in /proc/net/if_inet6): polled, as a busy machine
    may take longer than the usual second or two."""
    wanted = ipaddress.IPv6Address(address).exploded.replace(":", "")

    def settled():
        table = engine.exec(veid, ["cat", "/proc/net/if_inet6"]).stdout.decode()
        flags = [int(f[4], 16) for f in map(str.split, table.splitlines()) if f and f[0] == wanted]
        return bool(flags) and not flags[0] & 0x40  # IFA_F_TENTATIVE

    assert _wait_for(settled, seconds), f"{address} stayed tentative in VE {veid}"


def echo_requests(run):
    """(IPv4, IPv6) echo requests received so far by the namespace ``run`` runs in."""
    v4 = run("cat", "/proc/net/snmp").stdout.splitlines()
    names, values = [line.split() for line in v4 if line.startswith("Icmp:")][:2]
    v6 = dict(line.split() for line in run("cat", "/proc/net/snmp6").stdout.splitlines())
    return int(values[names.index("InEchos")]), int(v6["Icmp6InEchos"])


def _in_ve(engine, veid):
    """A ``run`` for ``echo_requests`` that reads the VE's own counters."""
    def run(*argv):
        return subprocess.CompletedProcess(argv, 0, engine.exec(veid, list(argv)).stdout.decode())
    return run


def _host_pings(hostnet, target):
    return hostnet.run("busybox", "ping", "-c", "2", "-W", "1", target,
                       check=False).returncode == 0


def start(hostnet, *veids):
    return hostnet.engine("print(json.dumps([e.start(x) for x in v['veids']]))", veids=veids)


def test_two_ves_reach_each_other_and_the_host_over_ipv4_and_ipv6(engine, hostnet):
    make(engine, A, nameservers=(HOST_V4,))
    make(engine, B)
    start(hostnet, 401, 402)
    for target in B[1] + (HOST_V4, HOST_V6):
        assert ping(engine, 401, target), f"VE 401 cannot reach {target}"
    for target in A[1]:
        assert ping(engine, 402, target), f"VE 402 cannot reach {target}"
        assert hostnet.run("busybox", "ping", "-c", "1", "-W", "2", target, check=False) \
            .returncode == 0, f"the host cannot reach {target}"
    # A TCP service inside the VE answers the host.
    engine.exec(401, ["sh", "-c", "(echo hello-from-401 | nc -l -p 7000) >/dev/null 2>&1 &"])
    got = hostnet.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket, time
        for _ in range(50):
            try:
                s = socket.create_connection(("{A[1][0]}", 7000), timeout=2); break
            except OSError:
                time.sleep(0.1)
        print(s.recv(100).decode().strip())"""))
    assert got.stdout.strip() == "hello-from-401"
    inside = engine.exec(401, ["cat", "/etc/resolv.conf", "/etc/hosts"]).stdout.decode()
    assert f"nameserver {HOST_V4}" in inside and f"{A[1][0]}\tve401.example ve401" in inside


def test_nothing_reaches_an_address_the_ve_does_not_own(engine, hostnet):
    make(engine, A)
    make(engine, B)
    start(hostnet, 401, 402)
    assert engine.exec(401, ["ip", "addr", "add", "198.18.7.99/32", "dev", "eth0"]).returncode == 0
    assert engine.exec(401, ["ip", "-6", "addr", "add", "fd00:7::99/128",
                             "dev", "eth0"]).returncode == 0
    wait_past_dad(engine, 401, "fd00:7::99")  # busybox ip has no nodad
    for target in (B[1][0], HOST_V4):
        assert not ping(engine, 401, target, source="198.18.7.99"), f"spoofed v4 reached {target}"
        # The spoofed ARP request may have left a failed neighbour entry: retry.
        assert ping(engine, 401, target, source=A[1][0], count=3), \
            "the VE's own address must still work"
    for target in (B[1][1], HOST_V6):
        assert not ping(engine, 401, target, source="fd00:7::99"), f"spoofed v6 reached {target}"
    # Nor is anything from the foreign address delivered to the host itself
    # (ping cannot tell: the reply has no way back; the host's counters can).
    before = echo_requests(hostnet.run)
    ping(engine, 401, HOST_V4, source="198.18.7.99")
    ping(engine, 401, HOST_V6, source="fd00:7::99")
    assert echo_requests(hostnet.run) == before
    # Its own address is delivered (named: with two addresses the kernel may pick either).
    assert ping(engine, 401, HOST_V6, source=A[1][1], count=3)
    assert echo_requests(hostnet.run)[1] > before[1]
    # The host never routes the foreign address to the VE that claimed it.
    assert hostnet.run("busybox", "ping", "-c", "1", "-W", "1", "198.18.7.99",
                       check=False).returncode != 0


def test_the_host_ignores_router_advertisements_from_a_routed_ve(engine, hostnet):
    make(engine, A)
    start(hostnet, 401)
    send_router_advertisement(engine, 401)
    assert RA_PREFIX not in hostnet.run("ip", "-6", "addr").stdout
    assert "veth401" not in hostnet.run("ip", "-6", "route", "show", "default").stdout
    # The advertisement is real: a link that accepts them takes the prefix.
    hostnet.run("sysctl", "-q", "net.ipv6.conf.veth401.accept_ra=2",
                "net.ipv6.conf.veth401.autoconf=1")
    send_router_advertisement(engine, 401)
    assert _wait_for(lambda: RA_PREFIX in hostnet.run("ip", "-6", "addr").stdout)


def test_addresses_change_live_and_survive_a_restart(engine, hostnet):
    make(engine, A)
    make(engine, B)
    start(hostnet, 401, 402)
    hostnet.engine("e.set(401, ipadd=['198.18.7.21'], ipdel=['fd00:7::11'], "
                   "nameservers=['198.18.7.1'])\nprint('null')")
    assert ping(engine, 402, "198.18.7.21")
    assert not ping(engine, 402, "fd00:7::11")
    hostnet.engine("e.restart(401, timeout=2)\nprint('null')")
    assert engine.config(401).ips == ("198.18.7.11", "198.18.7.21")
    assert ping(engine, 402, "198.18.7.21") and ping(engine, 402, "198.18.7.11")
    assert "nameserver 198.18.7.1" in engine.exec(401, ["cat", "/etc/resolv.conf"]).stdout.decode()


def _rx_bytes_inside(engine, veid):
    out = engine.exec(veid, ["cat", "/sys/class/net/eth0/statistics/rx_bytes"]).stdout
    return int(out), time.monotonic()


def _transfer(hostnet, engine, direction, nbytes):
    """Send ``nbytes`` over TCP between host and VE 401; return the rate seen, in Mbit/s.

    Towards the VE the rate is read from the VE's own eth0 counter over the
    steady middle of the transfer; from the VE, the host's receiver times it.
    """
    if direction == "to_ve":
        engine.exec(401, ["sh", "-c", "(nc -l -p 7001 > /dev/null) >/dev/null 2>&1 &"])
        sender = subprocess.Popen(["nsenter", f"--net={hostnet.path}", sys.executable, "-c",
                                   textwrap.dedent(f"""
            import socket, time
            for _ in range(50):
                try:
                    s = socket.create_connection(("{A[1][0]}", 7001)); break
                except OSError:
                    time.sleep(0.1)
            chunk, sent = b"x" * 65536, 0
            while sent < {nbytes}:
                s.sendall(chunk); sent += len(chunk)
            s.shutdown(socket.SHUT_WR); s.recv(1)""")])
        time.sleep(2)  # past TCP's start
        bytes0, t0 = _rx_bytes_inside(engine, 401)
        time.sleep(4)
        bytes1, t1 = _rx_bytes_inside(engine, 401)
        sender.wait(timeout=120)
        return (bytes1 - bytes0) * 8 / (t1 - t0) / 1e6
    receiver = subprocess.Popen(["nsenter", f"--net={hostnet.path}", sys.executable, "-c",
                                 textwrap.dedent(f"""
        import socket, time
        srv = socket.create_server(("{HOST_V4}", 7002)); print("ready", flush=True)
        conn, _ = srv.accept(); got = 0; first = None
        while chunk := conn.recv(65536):
            first = first or time.monotonic(); got += len(chunk)
        print(got * 8 / (time.monotonic() - first) / 1e6)""")], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout.readline().strip() == "ready"
    count = nbytes // 65536
    engine.exec(401, ["sh", "-c", f"dd if=/dev/zero bs=65536 count={count} 2>/dev/null | "
                                  f"nc {HOST_V4} 7002"])
    return float(receiver.communicate(timeout=120)[0].strip())


@pytest.mark.parametrize("direction", ["to_ve", "from_ve"])
def test_a_10_mbit_limit_holds_within_15_percent(engine, hostnet, direction):
    make(engine, A, limits={"rate": 10})
    start(hostnet, 401)
    measured = _transfer(hostnet, engine, direction, 10 << 20)
    print(f"10 Mbit/s limit, {direction}: measured {measured:.2f} Mbit/s")
    assert 8.5 <= measured <= 11.5


def test_counters_match_the_bytes_sent_and_survive_restart(engine, hostnet):
    make(engine, A)
    start(hostnet, 401)
    payload, count = 1400, 2000
    before = hostnet.engine("print(json.dumps(e.traffic(401)))")
    engine.exec(401, ["sh", "-c", "(nc -u -l -p 7003 > /dev/null) >/dev/null 2>&1 &"])
    time.sleep(0.3)
    hostnet.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range({count}):
            s.sendto(b"u" * {payload}, ("{A[1][0]}", 7003)); time.sleep(0.0002)"""))
    after = hostnet.engine("print(json.dumps(e.traffic(401)))")
    wire = count * (payload + 8 + 20 + 14)  # UDP, IPv4 and Ethernet headers
    received = after["rx_bytes"] - before["rx_bytes"]
    assert abs(received - wire) / wire < 0.01, (received, wire)
    assert after["rx_packets"] - before["rx_packets"] >= count
    hostnet.engine("e.restart(401, timeout=2)\nprint('null')")
    again = hostnet.engine("print(json.dumps(e.traffic(401)))")
    assert again["rx_bytes"] >= after["rx_bytes"] and again["tx_bytes"] >= after["tx_bytes"]


def test_traffic_out_of_reach_is_unknown_not_zero(engine, hostnet):
    """Asked from a network namespace other than the VE's host side (and not a
    named one it could enter), vectl reports the traffic as unknown, not 0."""
    from .conftest import vectl
    make(engine, A)
    start(hostnet, 401)
    assert ping(engine, 401, HOST_V4, count=2)
    seen_there = hostnet.engine("print(json.dumps(e.traffic(401)))")
    assert seen_there["rx_bytes"] > 0 and seen_there["tx_packets"] > 0
    here = json.loads(vectl(engine, "status", "401", "--json").stdout)["traffic"]
    assert here == dict.fromkeys(("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"))
    assert "rx_bytes unknown" in vectl(engine, "status", "401").stdout
    (sampled,) = [r for r in engine.sample()["ves"] if r["veid"] == 401]
    assert sampled["rx_bytes"] is None and sampled["tx_packets"] is None
    # Once it stops (from its own namespace), the saved totals are complete anywhere.
    hostnet.engine("e.stop(401, fast=True)\nprint('null')")
    stopped = json.loads(vectl(engine, "status", "401", "--json").stdout)["traffic"]
    assert stopped["rx_bytes"] >= seen_there["rx_bytes"] > 0


def test_50_starts_and_stops_leave_the_host_network_as_it_was(engine, hostnet):
    make(engine, A, limits={"rate": 100}, nameservers=(HOST_V4,))
    make(engine, B)
    # The first start prepares the host once (forwarding on, the "local" rule
    # moved behind the anti-spoofing rules); from then on nothing may pile up.
    hostnet.engine("e.start(401); e.stop(401, fast=True)\nprint('null')")
    before = hostnet.snapshot()
    assert "20002:\tfrom all lookup local" in before and "0:\tfrom all lookup local" not in before
    cycles = hostnet.engine("""
        for i in range(50):
            e.start(401); e.start(402)
            e.stop(401, fast=True); e.stop(402, fast=True)
        print(50)""")
    assert cycles == 50
    assert hostnet.snapshot() == before


def test_a_failed_network_setup_leaves_nothing(engine, hostnet):
    make(engine, A, netmode="bridged", bridge="nosuchbr0")
    before = hostnet.snapshot()
    out = hostnet.run(sys.executable, "-m", "ve.cli", "start", "401", check=False,
                      env=dict(os.environ, PYTHONPATH=ROOT_DIR,
                               VE_ROOT=str(engine.layout.root),
                               VE_CGROUP_PARENT=engine.cgroups.parent))
    assert out.returncode == 6 and "bridge nosuchbr0 does not exist" in out.stderr
    assert hostnet.snapshot() == before
    assert engine.status(401).state == "stopped"
    assert not engine.cgroups.exists("401")


def test_what_a_crash_or_a_stray_device_left_never_stops_a_start(engine, hostnet):
    """The host side's record (ve/net/links.py): after a crash (init killed, no stop
    ran) the next start removes what the record names; a device of the VE there
    despite a clean record (a namespace the kernel still tears down, a hand-made
    one) makes the start look for everything and try again. Each stop then leaves
    the host as it was, conntrack chains included."""
    make(engine, A, limits={"rate": 100, "numconn": 500})
    hostnet.engine("e.start(401); e.stop(401, fast=True)\nprint('null')")
    before = hostnet.snapshot()
    assert "ve_401_from" in before  # the limit's chains stay while the VE is stopped
    pid = start(hostnet, 401)[0]
    assert "ve_401_from" in hostnet.run("nft", "list", "ruleset").stdout
    os.kill(pid, 9)  # a crash: the engine never stops it
    assert _wait_for(lambda: not os.path.exists(f"/proc/{pid}"))
    assert "ifb401" in hostnet.run("ip", "-o", "link").stdout  # left behind
    start(hostnet, 401)
    assert ping(engine, 401, HOST_V4)
    hostnet.engine("e.stop(401, fast=True)\nprint('null')")
    assert hostnet.snapshot() == before
    hostnet.run("ip", "link", "add", "veth401", "type", "bridge")  # stray, behind the record's back
    start(hostnet, 401)
    assert ping(engine, 401, HOST_V4)
    hostnet.engine("e.stop(401, fast=True)\nprint('null')")
    assert hostnet.snapshot() == before
    # A crash of a run an older engine made: no record, and the conntrack table of
    # its own that VE had then.
    pid = start(hostnet, 401)[0]
    os.kill(pid, 9)
    assert _wait_for(lambda: not os.path.exists(f"/proc/{pid}"))
    os.unlink(engine.layout.host_side(401))
    hostnet.run("nft", "add", "table", "inet", "ve_ct_401")
    start(hostnet, 401)
    hostnet.engine("e.stop(401, fast=True)\nprint('null')")
    assert hostnet.snapshot() == before


def test_network_files_the_ve_broke_warn_and_an_init_that_fails_still_fails(engine, hostnet):
    """PID 1 writes /etc/hosts before it execs init: a file it cannot write (VE root
    made it a directory) is a warning and the VE runs; init failing after that
    warning is still a failed start, with init's error, and leaves nothing behind."""
    make(engine, A, layout="dir")
    hostnet.engine("e.start(401); e.stop(401, fast=True)\nprint('null')")  # prepares the host
    before = hostnet.snapshot()
    etc = engine.layout.private(401) / "etc"
    (etc / "hosts").unlink()
    (etc / "hosts").mkdir()
    out = hostnet.run(sys.executable, "-m", "ve.cli", "start", "401",
                      env=dict(os.environ, PYTHONPATH=ROOT_DIR, VE_ROOT=str(engine.layout.root),
                               VE_CGROUP_PARENT=engine.cgroups.parent))
    assert "cannot write /etc/hosts" in out.stderr
    assert ping(engine, 401, HOST_V4)
    hostnet.engine("e.stop(401, fast=True)\nprint('null')")
    init = engine.layout.private(401) / "sbin" / "init"
    init.rename(init.with_name("init.away"))
    failed = hostnet.engine("""
        try:
            e.start(401)
            print(json.dumps("started"))
        except Exception as exc:
            print(json.dumps(str(exc)))""")
    assert "init:" in failed and "/sbin/init" in failed, failed
    assert engine.status(401).state == "stopped"
    assert hostnet.snapshot() == before
    init.with_name("init.away").rename(init)
    (etc / "hosts").rmdir()
    start(hostnet, 401)
    assert "198.18.7.11" in engine.exec(401, ["cat", "/etc/hosts"]).stdout.decode()


def test_the_rate_changes_live(engine, hostnet):
    make(engine, A)
    start(hostnet, 401)
    assert "tbf" not in hostnet.run("tc", "qdisc").stdout
    hostnet.engine("e.set(401, rate=10)\nprint('null')")
    qdiscs = hostnet.run("tc", "qdisc").stdout
    assert "qdisc tbf 1: dev veth401 root" in qdiscs and "rate 10Mbit" in qdiscs
    assert "qdisc tbf 1: dev ifb401 root" in qdiscs and "ingress ffff: dev veth401" in qdiscs
    assert ping(engine, 401, HOST_V4)
    hostnet.engine("e.set(401, rate=0)\nprint('null')")
    qdiscs = hostnet.run("tc", "qdisc").stdout
    assert "tbf" not in qdiscs and "ifb401" not in hostnet.run("ip", "-o", "link").stdout


def _link_line(hostnet, name):
    return next((line for line in hostnet.run("ip", "-o", "link").stdout.splitlines()
                 if f" {name}:" in line), None)


def test_a_stop_leaves_the_veth_to_the_dying_namespace_and_keeps_the_ifb(engine, hostnet):
    """A stop retires the host end (renamed, down: its routes go) for the VE's
    namespace to take along, so a start right after finds the name free; the ifb
    (deleting one waits for RCU) stays idle until the VE loses its rate or goes."""
    make(engine, A, limits={"rate": 10})
    start(hostnet, 401)
    ifb = _link_line(hostnet, "ifb401")
    assert ifb is not None
    hostnet.engine("e.stop(401, fast=True); e.start(401)\nprint('null')")  # back to back
    assert ping(engine, 401, HOST_V4) and ping(engine, 401, HOST_V6)
    qdiscs = hostnet.run("tc", "qdisc").stdout
    assert "qdisc tbf 1: dev ifb401 root" in qdiscs and "ingress ffff: dev veth401" in qdiscs
    assert _link_line(hostnet, "ifb401").split(":")[0] == ifb.split(":")[0]  # the same ifb
    # The VE's namespace held from outside outlives the stop: its retired link shows.
    held = os.open(f"/proc/{engine.status(401).init_pid}/ns/net", os.O_RDONLY)
    try:
        hostnet.engine("e.stop(401)\nprint('null')")  # a clean stop retires the link too
        links, routes = hostnet.run("ip", "-o", "link").stdout, hostnet.run("ip", "route").stdout
        assert RETIRED in links and "veth401" not in links and "198.18.7.11" not in routes
        assert "ifb401" in links and "dev veth401" not in hostnet.run("tc", "qdisc").stdout
    finally:
        os.close(held)
    assert hostnet.wait_for_retired_links()  # the namespace took it along
    hostnet.engine("e.set(401, rate=20); e.start(401); e.stop(401, fast=True)\nprint('null')")
    assert "rate 20Mbit" in hostnet.run("tc", "qdisc", "show", "dev", "ifb401").stdout
    hostnet.engine("e.set(401, rate=0)\nprint('null')")  # stopped: its ifb goes at once
    assert _link_line(hostnet, "ifb401") is None
    hostnet.engine("e.set(401, rate=20); e.start(401); e.destroy(401)\nprint('null')")
    assert hostnet.wait_for_retired_links()
    links = hostnet.run("ip", "-o", "link").stdout
    assert "ifb401" not in links and "veth401" not in links


def test_a_start_from_another_namespace_forgets_what_the_last_stop_kept_there(engine,
                                                                             hostnet):
    """The ifb and conntrack chains a stop kept live where the VE ran: a start from
    another network namespace (vectl on the host after the dashboard's worker, say)
    deletes them there, and makes its own."""
    from .hostnet import HostNet
    make(engine, A, limits={"rate": 10, "numconn": 500})
    other = HostNet.named(engine, f"vetest-{os.getpid()}")
    try:
        other.engine("e.start(401); e.stop(401, fast=True)\nprint('null')")
        assert "ifb401" in other.run("ip", "-o", "link").stdout
        assert "ve_401_from" in other.run("nft", "list", "ruleset").stdout
        hostnet.engine("e.start(401)\nprint('null')")
        assert "ifb401" not in other.run("ip", "-o", "link").stdout
        assert "ve_401_from" not in other.run("nft", "list", "ruleset").stdout
        assert ping(engine, 401, HOST_V4)
        assert "qdisc tbf 1: dev ifb401 root" in hostnet.run("tc", "qdisc").stdout
        assert "ve_401_from" in hostnet.run("nft", "list", "ruleset").stdout
    finally:
        other.close()


def test_bridged_ves_talk_over_the_bridge(engine, hostnet):
    hostnet.run("ip", "link", "add", "br0", "type", "bridge")
    hostnet.run("ip", "link", "set", "br0", "up")
    make(engine, A, netmode="bridged", bridge="br0")
    make(engine, B, netmode="bridged", bridge="br0")
    start(hostnet, 401, 402)
    members = hostnet.run("ip", "-o", "link", "show", "master", "br0").stdout
    assert "veth401" in members and "veth402" in members
    assert ping(engine, 401, B[1][0]) and ping(engine, 402, A[1][0])
    assert hostnet.run("ip", "route").stdout.count("veth40") == 0  # no host routes when bridged


def _bridge_with_host_address(hostnet):
    """br0 with the host on it at 198.18.7.2/24 and fd00:7::2/64.

    A spare port (a veth pair, both ends up; this kernel has no dummy links)
    keeps its carrier, and so the host's view of it, steady while VEs come
    and go."""
    hostnet.run("ip", "link", "add", "br0", "type", "bridge")
    hostnet.run("sysctl", "-q", "net.ipv6.conf.br0.accept_dad=0")
    hostnet.run("ip", "link", "add", "brport0", "type", "veth", "peer", "name", "brpeer0")
    hostnet.run("sysctl", "-q", "net.ipv6.conf.brport0.disable_ipv6=1",
                "net.ipv6.conf.brpeer0.disable_ipv6=1")
    hostnet.run("ip", "link", "set", "brpeer0", "up")
    hostnet.run("ip", "link", "set", "brport0", "master", "br0", "up")
    hostnet.run("ip", "link", "set", "br0", "up")
    hostnet.run("ip", "addr", "add", "198.18.7.2/24", "dev", "br0")
    hostnet.run("ip", "addr", "add", "fd00:7::2/64", "dev", "br0", "nodad")


def test_a_bridged_ve_cannot_send_from_or_answer_for_a_foreign_address(engine, hostnet):
    _bridge_with_host_address(hostnet)
    # A is shaped: its frames pass the ifb detour and must still meet the guard.
    make(engine, A, netmode="bridged", bridge="br0", limits={"rate": 100})
    make(engine, B, netmode="bridged", bridge="br0")
    start(hostnet, 401, 402)
    for target in (B[1][0], B[1][1], "198.18.7.2", "fd00:7::2"):
        assert ping(engine, 401, target, count=3), f"VE 401 cannot reach {target}"
    assert engine.exec(401, ["ip", "addr", "add", "198.18.7.99/24", "dev", "eth0"]).returncode == 0
    assert engine.exec(401, ["ip", "-6", "addr", "add", "fd00:7::99/64",
                             "dev", "eth0"]).returncode == 0
    wait_past_dad(engine, 401, "fd00:7::99")
    host_before, b_before = echo_requests(hostnet.run), echo_requests(_in_ve(engine, 402))
    for target, source in (("198.18.7.2", "198.18.7.99"), (B[1][0], "198.18.7.99"),
                           ("fd00:7::2", "fd00:7::99"), (B[1][1], "fd00:7::99")):
        assert not ping(engine, 401, target, source=source), f"{source} reached {target}"
    assert echo_requests(hostnet.run) == host_before
    assert echo_requests(_in_ve(engine, 402)) == b_before
    # Nor does the VE answer ARP or neighbour solicitations for them.
    for foreign in ("198.18.7.99", "fd00:7::99"):
        assert not _host_pings(hostnet, foreign), f"the VE answered for {foreign}"
    # A MAC of its own choosing gets it nowhere either.
    engine.exec(401, ["ip", "link", "set", "eth0", "address", "02:00:00:00:00:99"])
    assert not ping(engine, 401, "198.18.7.2", source=A[1][0], count=2)
    engine.exec(401, ["ip", "link", "set", "eth0", "address", guard.ve_mac(401)])
    assert ping(engine, 401, "198.18.7.2", source=A[1][0], count=3)
    # The guard is what stopped it: without it the host reaches the foreign address.
    hostnet.run("nft", "delete", "table", "bridge", guard.table_name(401))
    assert _host_pings(hostnet, "198.18.7.99")


def test_bridged_ves_and_the_host_ignore_router_advertisements_from_a_ve(engine, hostnet):
    _bridge_with_host_address(hostnet)
    make(engine, A, netmode="bridged", bridge="br0")
    make(engine, B, netmode="bridged", bridge="br0")
    start(hostnet, 401, 402)
    send_router_advertisement(engine, 401)
    assert RA_PREFIX not in hostnet.run("ip", "-6", "addr").stdout
    assert RA_PREFIX not in engine.exec(402, ["ip", "-6", "addr"]).stdout.decode()
    # Without the guard the same advertisement configures VE 402's address.
    hostnet.run("nft", "delete", "table", "bridge", guard.table_name(401))
    send_router_advertisement(engine, 401)
    assert _wait_for(lambda: RA_PREFIX in engine.exec(402, ["ip", "-6", "addr"]).stdout.decode())


def test_the_bridged_guard_follows_live_address_changes_and_goes_at_stop(engine, hostnet):
    _bridge_with_host_address(hostnet)
    make(engine, A, netmode="bridged", bridge="br0")
    hostnet.engine("e.start(401); e.stop(401, fast=True)\nprint('null')")
    before = hostnet.snapshot()
    assert guard.table_name(401) not in before
    start(hostnet, 401)
    assert guard.table_name(401) in hostnet.snapshot()
    hostnet.engine("e.set(401, ipadd=['198.18.7.41'])\nprint('null')")
    assert ping(engine, 401, "198.18.7.2", source="198.18.7.41", count=3)
    hostnet.engine("e.set(401, ipdel=['198.18.7.41'])\nprint('null')")
    engine.exec(401, ["ip", "addr", "add", "198.18.7.41/24", "dev", "eth0"])
    assert not ping(engine, 401, "198.18.7.2", source="198.18.7.41", count=2)
    hostnet.engine("e.stop(401, fast=True)\nprint('null')")
    assert hostnet.snapshot() == before


def test_an_address_of_another_ve_is_refused(engine, hostnet):
    from ve.errors import AlreadyExists
    make(engine, A)
    with pytest.raises(AlreadyExists, match="belongs to VE 401"):
        make(engine, (402, (A[1][0],)))
    make(engine, B)
    with pytest.raises(AlreadyExists, match="belongs to VE 401"):
        engine.set(402, ipadd=[A[1][1]])


def test_live_address_changes_from_none_to_some_and_back(engine, hostnet):
    make(engine, (401, ()))
    make(engine, B)
    start(hostnet, 401, 402)
    before = hostnet.snapshot()
    hostnet.engine("e.set(401, ipadd=['198.18.7.31', 'fd00:7::31'])\nprint('null')")
    assert ping(engine, 401, HOST_V4) and ping(engine, 401, HOST_V6)  # default routes came too
    assert ping(engine, 402, "198.18.7.31")
    hostnet.engine("e.set(401, ipdel=['all'])\nprint('null')")
    after = hostnet.snapshot()
    # Only VE 402's part may differ from nothing: 401 left no link, rule or route behind.
    assert "veth401" not in after and "ifb401" not in after and after == before

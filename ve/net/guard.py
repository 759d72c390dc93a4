"""Anti-spoofing for bridged VEs: an nftables bridge-family table per VE port.

A bridged VE's frames are switched (and reach the host's stack through the
bridge), so the routing rules of ``rules`` never see them. Instead, table
``ve_guard_<VEID>`` hooks the bridge's prerouting and, for frames entering from
``veth<VEID>``, lets through only:

- the MAC the engine gave the VE's eth0 (``ve_mac``);
- ARP whose sender is that MAC and one of the VE's IPv4 addresses (or 0.0.0.0,
  an address probe), so it cannot answer for anyone else's address;
- IPv4 from the VE's addresses, IPv6 from its addresses, and ICMPv6 (neighbour
  discovery, MLD) from link-local or unspecified sources;
- no router advertisements or redirects, and no neighbour advertisements for a
  target it was not given.

Everything else from the port (other sources, other ethertypes, VLAN tags) is
dropped. The table is written with ``nft -j`` from JSON this module builds out
of validated addresses: no text is ever parsed as rules. The tables outlive
the link and are removed explicitly.
"""

import ipaddress
import json
import socket
import subprocess

from . import host_ifname

PRIORITY = -200  # before the bridge's own filter chains
LINK_LOCAL = ipaddress.ip_network("fe80::/10")


def table_name(veid):
    return f"ve_guard_{veid}"


def ve_mac(veid):
    """The MAC of a VE's eth0: locally administered, stable per node and VEID."""
    try:
        with open("/etc/machine-id") as f:
            node = f.read().strip()
    except OSError:
        node = socket.gethostname()
    digest = _sha256(f"{node}/{veid}".encode())
    return ":".join(f"{b:02x}" for b in (0x02,) + tuple(digest[:5]))


def _sha256(data):
    """SHA-256 of ``data``, from CPython's own implementation where it has one:
    ``hashlib`` loads OpenSSL's libcrypto, ~3 ms of every start (the digest is the same)."""
    try:
        from _sha256 import sha256  # CPython up to 3.11 (3.12 calls it _sha2)
    except ImportError:
        from hashlib import sha256
    return sha256(data).digest()


def apply(veid, ips):
    """Install (or atomically replace) the guard of VE ``veid``'s port for ``ips``."""
    family = {"family": "bridge", "table": table_name(veid)}
    table = {"family": "bridge", "name": table_name(veid)}
    chain = dict(family, name="port", type="filter", hook="prerouting", prio=PRIORITY,
                 policy="accept")
    commands = [{"add": {"table": table}}, {"delete": {"table": table}},  # add+delete: none
                {"add": {"table": table}}, {"add": {"chain": chain}}]       # left, no error
    commands += [{"add": {"rule": dict(family, chain="port", expr=expr)}}
                 for expr in _rules(veid, ips)]
    nft(commands)


def remove(veid):
    """Delete the guard of VE ``veid`` if there is one (also after a crashed start)."""
    try:
        nft([{"delete": {"table": {"family": "bridge", "name": table_name(veid)}}}])
    except OSError:
        pass  # none: nothing to delete (one attempt costs less than a listing)


def _rules(veid, ips):
    v4 = [ip for ip in ips if ":" not in ip]
    v6 = [ip for ip in ips if ":" in ip]
    mac = ve_mac(veid)
    yield [_match("!=", _meta("iifname"), host_ifname(veid)), {"accept": None}]
    yield [_match("!=", _field("ether", "saddr"), mac), {"drop": None}]
    yield [_match("==", _field("arp", "saddr ether"), mac),
           _match("==", _field("arp", "saddr ip"), {"set": v4 + ["0.0.0.0"]}), {"accept": None}]
    if v4:
        yield [_match("==", _field("ip", "saddr"), {"set": v4}), {"accept": None}]
    yield [_match("==", _field("icmpv6", "type"), {"set": ["nd-router-advert", "nd-redirect"]}),
           {"drop": None}]
    # nft 1.0.6 has no name for the target of a neighbour advertisement: it is
    # the 16 bytes at offset 8 of the ICMPv6 header, compared as an integer.
    yield [_match("==", _field("icmpv6", "type"), "nd-neighbor-advert"),
           _match("!=", {"payload": {"base": "th", "offset": 64, "len": 128}},
                  {"set": [_hex(ip) for ip in v6] + [{"range": [_hex(LINK_LOCAL[0]),
                                                                _hex(LINK_LOCAL[-1])]}]}),
           {"drop": None}]
    if v6:
        yield [_match("==", _field("ip6", "saddr"), {"set": v6}), {"accept": None}]
    yield [_match("==", _field("ip6", "saddr"),
                  {"set": [{"prefix": {"addr": "fe80::", "len": 10}}, "::"]}),
           _match("==", _meta("l4proto"), "ipv6-icmp"), {"accept": None}]
    yield [{"drop": None}]


def nft(commands):
    """Run ``commands`` (nft's JSON) as one transaction; OSError if nft refuses them."""
    Transaction(commands).finish()


class Transaction:
    """An ``nft -j`` transaction that runs while the caller goes on; ``finish``
    waits for it. (Deleting rules costs the nft process an RCU grace period as
    it closes its socket: overlapped with the link's removal, the stop pays it once.)"""

    def __init__(self, commands):
        try:  # not looked up with shutil.which first: importing shutil costs each start ~2 ms
            self.proc = subprocess.Popen(["nft", "-j", "-f", "-"], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except (FileNotFoundError, PermissionError):  # none on PATH, or not executable
            raise OSError("VE network rules need nft (Debian package nftables)") from None
        try:
            self.proc.stdin.write(json.dumps({"nftables": commands}).encode())
            self.proc.stdin.close()  # a few KiB: the pipe holds it, nft reads it at once
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def finish(self):
        """Wait for nft; OSError with its message if it refused the transaction."""
        with self.proc:
            error = self.proc.stderr.read().decode(errors="replace")
            if self.proc.wait():
                raise OSError(f"nft refused the VE's rules: {error.strip()}")


def _match(op, left, right):
    return {"match": {"op": op, "left": left, "right": right}}


def _field(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


def _meta(key):
    return {"meta": {"key": key}}


def _hex(ip):
    return f"0x{int(ipaddress.ip_address(ip)):032x}"

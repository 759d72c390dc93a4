"""A small synchronous rtnetlink client: what a VE's start and stop ask of the kernel.

Links (veth pairs, ifbs, groups), addresses, routes, policy rules, proxy
neighbour entries and the tc qdiscs and filter of ``shaping``, as raw netlink
messages on one socket. pyroute2 can do all this and much more, but importing
it costs ~100 ms, more than the whole start of a VE through ``vectl``; the
engine keeps it for what is neither hot nor simple (conntrack dumps, the
sampler, the teardown of a namespace full of devices).

Every request waits for its acknowledgement; a refusal raises ``NetlinkError``
(an OSError whose ``code`` is the errno, as pyroute2's has).
"""

import errno
import ipaddress
import os
import socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTFILTER = 44
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x2, 0x4, 0x8
NLM_F_DUMP_INTR, NLM_F_DUMP = 0x10, 0x300
DUMP_ATTEMPTS = 3
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NEW = NLM_F_CREATE | NLM_F_EXCL

IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 5, 10, 18
IFLA_NET_NS_PID, IFLA_STATS64, IFLA_GROUP = 19, 23, 27
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFF_UP = 0x1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
SCOPE_UNIVERSE, SCOPE_LINK = 0, 253
FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_TABLE, FRA_GOTO = 2, 3, 6, 15, 4
FR_ACT_TO_TBL, FR_ACT_GOTO, FR_ACT_BLACKHOLE = 1, 2, 6
NDA_DST, NTF_PROXY, NUD_PERMANENT = 1, 0x08, 0x80
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RATE64, TCA_TBF_BURST = 1, 4, 6
TCA_U32_CLASSID, TCA_U32_SEL, TCA_U32_ACT = 1, 5, 7
TCA_ACT_KIND, TCA_ACT_OPTIONS, TCA_MIRRED_PARMS = 1, 2, 2
TC_ACT_STOLEN, TCA_EGRESS_REDIR = 4, 1
TC_U32_TERMINAL = 1
ETH_P_ALL = 0x0003

_HDR = struct.Struct("=IHHII")       # nlmsghdr: len, type, flags, seq, pid
_IFI = struct.Struct("=BxHiII")      # ifinfomsg: family, type, index, flags, change
_IFA = struct.Struct("=BBBBI")       # ifaddrmsg: family, prefixlen, flags, scope, index
_RTM = struct.Struct("=BBBBBBBBI")   # rtmsg: family, dst/src len, tos, table, protocol,
#                                      scope, type, flags
_FRH = struct.Struct("=BBBBBBBBI")   # fib_rule_hdr: family, dst/src len, tos, table, 2 x
#                                      reserved, action, flags
_NDM = struct.Struct("=BxxxiHBB")    # ndmsg: family, ifindex, state, flags, type
_TCM = struct.Struct("=BxxxiIII")    # tcmsg: family, ifindex, handle, parent, info
_RTA = struct.Struct("=HH")


class NetlinkError(OSError):
    """The kernel refused a request: ``code`` is its errno."""

    def __init__(self, code, what=""):
        super().__init__(code, f"{what}: {os.strerror(code)}" if what else os.strerror(code))
        self.code = code


def attr(kind, payload):
    """One netlink attribute (payload: bytes, str (NUL-terminated) or int (u32))."""
    if isinstance(payload, str):
        payload = payload.encode() + b"\0"
    elif isinstance(payload, int):
        payload = struct.pack("=I", payload)
    data = _RTA.pack(_RTA.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _address(text):
    ip = ipaddress.ip_address(text)
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), ip.packed


def _family(text):
    return socket.AF_INET6 if ":" in text else socket.AF_INET


class Rtnl:
    """One rtnetlink socket in the caller's network namespace (the namespace the
    thread was in when it was made, whichever thread uses it later)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- links -------------------------------------------------------------------

    def link_index(self, name):
        """The ifindex of link ``name``, or None if there is none."""
        try:
            for kind, payload in self._request(RTM_GETLINK, 0, _IFI.pack(0, 0, 0, 0, 0)
                                               + attr(IFLA_IFNAME, name), dump=False):
                if kind == RTM_NEWLINK and len(payload) >= _IFI.size:
                    return _IFI.unpack_from(payload)[2]
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return None

    def link_info(self, name):
        """{"index", "peer" (IFLA_LINK: a veth's peer's ifindex, or None), "stats"
        ({rx_bytes, tx_bytes, rx_packets, tx_packets})} of link ``name``, or None if
        there is none."""
        try:
            replies = self._request(RTM_GETLINK, 0, _IFI.pack(0, 0, 0, 0, 0)
                                    + attr(IFLA_IFNAME, name), dump=False)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for kind, payload in replies:
            if kind == RTM_NEWLINK and len(payload) >= _IFI.size:
                attrs = _attrs(payload, _IFI.size)
                stats = attrs.get(IFLA_STATS64, b"")
                rx_packets, tx_packets, rx_bytes, tx_bytes = \
                    struct.unpack_from("=4Q", stats if len(stats) >= 32 else b"\0" * 32)
                return {"index": _IFI.unpack_from(payload)[2],
                        "peer": _u32(attrs.get(IFLA_LINK)),
                        "stats": {"rx_bytes": rx_bytes, "tx_bytes": tx_bytes,
                                  "rx_packets": rx_packets, "tx_packets": tx_packets}}
        return None

    def add_veth(self, name, group, peer_name, peer_mac, peer_netns_pid=None):
        """A veth pair: ``name`` here in link ``group``, its peer (MAC ``peer_mac``) in
        the network namespace of ``peer_netns_pid`` (None: here too)."""
        peer = _IFI.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, peer_name) \
            + attr(IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", "")))
        if peer_netns_pid is not None:
            peer += attr(IFLA_NET_NS_PID, peer_netns_pid)
        info = attr(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
        self._ack(RTM_NEWLINK, NEW, _IFI.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, name)
                  + attr(IFLA_GROUP, group) + attr(IFLA_LINKINFO, info), name)

    def add_link(self, name, kind, group, up=False):
        """A link of ``kind`` (say "ifb") in link ``group``; return its ifindex."""
        flags = IFF_UP if up else 0
        self._ack(RTM_NEWLINK, NEW, _IFI.pack(0, 0, 0, flags, flags) + attr(IFLA_IFNAME, name)
                  + attr(IFLA_GROUP, group)
                  + attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, kind)), name)
        return self.link_index(name)

    def set_link(self, index, up=None, master=None):
        flags, change = (IFF_UP if up else 0), (IFF_UP if up is not None else 0)
        extra = attr(IFLA_MASTER, master) if master is not None else b""
        self._ack(RTM_NEWLINK, 0, _IFI.pack(0, 0, index, flags, change) + extra, index)

    def retire_link(self, index, name, group):
        """Take link ``index`` down, out of the way: renamed ``name`` (a "%d" in it is
        a number the kernel picks) and moved to link ``group``. Going down takes its
        routes and addresses along."""
        body = attr(IFLA_IFNAME, name) + attr(IFLA_GROUP, group)
        try:
            self._ack(RTM_NEWLINK, 0, _IFI.pack(0, 0, index, 0, IFF_UP) + body, index)
        except NetlinkError as exc:
            if exc.code != errno.EBUSY:
                raise
            # An older kernel renames only a link that is down already.
            self.set_link(index, up=False)
            self._ack(RTM_NEWLINK, 0, _IFI.pack(0, 0, index, 0, 0) + body, index)

    def delete_link(self, index=0, group=None):
        """Delete link ``index``, or every link of ``group`` in one batch."""
        extra = attr(IFLA_GROUP, group) if group is not None else b""
        self._ack(RTM_DELLINK, 0, _IFI.pack(0, 0, index, 0, 0) + extra,
                  f"group {group}" if group is not None else index)

    # -- addresses, routes, neighbours --------------------------------------------

    def add_address(self, index, ip, prefixlen, nodad=True):
        family, packed = _address(ip)
        flags = IFA_F_NODAD if nodad else 0
        self._ack(RTM_NEWADDR, NEW, _IFA.pack(family, prefixlen, flags, SCOPE_UNIVERSE, index)
                  + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed) + attr(IFA_FLAGS, flags),
                  ip)

    def delete_address(self, index, ip, prefixlen):
        family, packed = _address(ip)
        self._ack(RTM_DELADDR, 0, _IFA.pack(family, prefixlen, 0, 0, index)
                  + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed), ip)

    def route(self, add, dst, prefixlen, oif, gateway=None, scope=SCOPE_UNIVERSE,
              family=None):
        """Add (or delete) the route to ``dst``/``prefixlen`` out of ``oif`` (via
        ``gateway``); ``dst`` None is the default route of ``family``."""
        attrs = attr(RTA_OIF, oif)
        if dst is not None:
            family, packed = _address(dst)
            attrs = attr(RTA_DST, packed) + attrs
        if gateway is not None:
            attrs += attr(RTA_GATEWAY, _address(gateway)[1])
        body = _RTM.pack(family, prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope,
                         RTN_UNICAST, 0) + attrs
        self._ack(RTM_NEWROUTE if add else RTM_DELROUTE, NEW if add else 0, body, dst)

    def proxy_neighbour(self, add, ip, index):
        """Answer for ``ip`` on link ``index`` (proxy ARP / NDP entry)."""
        family, packed = _address(ip)
        body = _NDM.pack(family, index, NUD_PERMANENT, NTF_PROXY, 0) + attr(NDA_DST, packed)
        self._ack(RTM_NEWNEIGH if add else RTM_DELNEIGH, NEW if add else 0, body, ip)

    # -- policy rules --------------------------------------------------------------

    def rule(self, add, family, priority, action, table=0, iifname=None, src=None,
             src_len=0, goto=None):
        attrs = attr(FRA_PRIORITY, priority)
        if iifname is not None:
            attrs += attr(FRA_IIFNAME, iifname)
        if src is not None:
            attrs += attr(FRA_SRC, _address(src)[1])
        if goto is not None:
            attrs += attr(FRA_GOTO, goto)
        body = _FRH.pack(family, 0, src_len, 0, table if table < 256 else 0, 0, 0, action, 0)
        self._ack(RTM_NEWRULE if add else RTM_DELRULE, NEW if add else 0, body + attrs,
                  f"rule {priority}")

    def rules(self, family):
        """The rules of ``family``: dicts of family, priority, action, table, src,
        src_len, iifname, goto (None where a rule has none)."""
        for attempt in range(DUMP_ATTEMPTS):
            try:
                return self._rules(family)
            except NetlinkError as exc:  # the rules changed during the dump: again
                if exc.code != errno.EINTR or attempt == DUMP_ATTEMPTS - 1:
                    raise
        return []

    def _rules(self, family):
        found = []
        for kind, payload in self._request(RTM_GETRULE, NLM_F_DUMP,
                                           _FRH.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            if kind != RTM_NEWRULE or len(payload) < _FRH.size:
                continue
            fam, _, src_len, _, table, _, _, action, _ = _FRH.unpack_from(payload)
            attrs = _attrs(payload, _FRH.size)
            src = attrs.get(FRA_SRC)
            found.append({
                "family": fam, "action": action, "src_len": src_len,
                "priority": _u32(attrs.get(FRA_PRIORITY)) or 0,
                "table": _u32(attrs.get(FRA_TABLE)) or table,
                "src": str(ipaddress.ip_address(src)) if src else None,
                "iifname": attrs[FRA_IIFNAME].rstrip(b"\0").decode()
                if FRA_IIFNAME in attrs else None,
                "goto": _u32(attrs.get(FRA_GOTO))})
        return found

    # -- traffic control -----------------------------------------------------------

    def add_tbf(self, index, rate_bytes, burst_bytes, latency_s, replace=False):
        """A token bucket at the root of link ``index`` (handle 1:); ``replace``: in place
        of the root qdisc there."""
        buffer_ticks = _ticks(burst_bytes / rate_bytes)
        limit = int(rate_bytes * latency_s + burst_bytes)
        # struct tc_tbf_qopt: rate and peakrate (struct tc_ratespec: cell_log,
        # linklayer, overhead, cell_align, mpu, rate), limit, buffer, mtu.
        rate = struct.pack("=BBHhHI", 0, 1, 0, -1, 0, min(rate_bytes, 0xFFFFFFFF))
        qopt = rate + struct.pack("=BBHhHI", 0, 0, 0, 0, 0, 0) \
            + struct.pack("=III", limit, buffer_ticks, 0)
        options = attr(TCA_TBF_PARMS, qopt) + attr(TCA_TBF_BURST, burst_bytes)
        if rate_bytes > 0xFFFFFFFF:
            options += attr(TCA_TBF_RATE64, struct.pack("=Q", rate_bytes))
        flags = NLM_F_CREATE | NLM_F_REPLACE if replace else NEW
        self._ack(RTM_NEWQDISC, flags, _TCM.pack(0, index, 0x10000, 0xFFFFFFFF, 0)
                  + attr(TCA_KIND, "tbf") + attr(TCA_OPTIONS, options), "tbf")

    def root_tbf_rate(self, index):
        """The rate (bytes/s) of the token bucket at the root of link ``index``; None if
        its root qdisc is not a tbf."""
        # Echoed: without NLM_F_ECHO the kernel tells only the listeners of its tc group.
        for kind, payload in self._request(RTM_GETQDISC, NLM_F_ACK | NLM_F_ECHO,
                                           _TCM.pack(0, index, 0, 0xFFFFFFFF, 0),
                                           dump=False, what="qdisc"):
            if kind != RTM_NEWQDISC or len(payload) < _TCM.size:
                continue
            attrs = _attrs(payload, _TCM.size)
            if attrs.get(TCA_KIND, b"").rstrip(b"\0") != b"tbf":
                return None
            options = _attrs(attrs.get(TCA_OPTIONS, b""), 0)
            if len(options.get(TCA_TBF_RATE64, b"")) >= 8:
                return struct.unpack_from("=Q", options[TCA_TBF_RATE64])[0]
            return _u32(options.get(TCA_TBF_PARMS, b"")[8:12])  # tc_ratespec's rate
        return None

    def add_ingress(self, index):
        self._ack(RTM_NEWQDISC, NEW, _TCM.pack(0, index, 0xFFFF0000, 0xFFFFFFF1, 0)
                  + attr(TCA_KIND, "ingress") + attr(TCA_OPTIONS, b""), "ingress")

    def delete_qdisc(self, index, handle, parent):
        self._ack(RTM_DELQDISC, 0, _TCM.pack(0, index, handle, parent, 0), "qdisc")

    def redirect_ingress(self, index, target, prio=10):
        """A u32 filter on link ``index``'s ingress that matches every packet and
        redirects it to link ``target``'s egress (mirred)."""
        # struct tc_u32_sel with one key (mask 0 at offset 0: everything matches)
        sel = struct.pack("=BBBxHHhhI", TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0) \
            + struct.pack("=IIii", 0, 0, 0, 0)
        # struct tc_mirred: tc_gen (index, capab, action, refcnt, bindcnt), eaction, ifindex
        mirred = struct.pack("=IIiiiii", 0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, target)
        action = attr(1, attr(TCA_ACT_KIND, "mirred")
                      + attr(TCA_ACT_OPTIONS, attr(TCA_MIRRED_PARMS, mirred)))
        options = attr(TCA_U32_CLASSID, 1) + attr(TCA_U32_SEL, sel) + attr(TCA_U32_ACT, action)
        info = (prio << 16) | socket.htons(ETH_P_ALL)
        self._ack(RTM_NEWTFILTER, NEW, _TCM.pack(0, index, 0, 0xFFFF0000, info)
                  + attr(TCA_KIND, "u32") + attr(TCA_OPTIONS, options), "u32 filter")

    # -- the wire ------------------------------------------------------------------

    def _ack(self, kind, flags, body, what):
        for _ in self._request(kind, flags | NLM_F_ACK, body, dump=False, what=what):
            pass

    def _request(self, kind, flags, body, dump=True, what=""):
        """Send one request; return its answers [(type, payload)], raising NetlinkError
        on a refusal."""
        self.seq += 1
        seq = self.seq
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0)
                       + body)
        answers = []
        while True:
            data, (sender, _) = self.sock.recvfrom(1 << 16)
            if sender != 0:
                continue  # only the kernel answers (a VE's root could send to this socket)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, msg_kind, msg_flags, msg_seq, _ = _HDR.unpack_from(data, offset)
                if length < _HDR.size or offset + length > len(data):
                    raise NetlinkError(errno.EPROTO, "truncated netlink message")
                payload = data[offset + _HDR.size:offset + length]
                offset += (length + 3) & ~3
                if msg_seq != seq:
                    continue
                if msg_flags & NLM_F_DUMP_INTR:
                    raise NetlinkError(errno.EINTR, f"{what}: changed during the dump")
                if msg_kind in (NLMSG_ERROR, NLMSG_DONE):
                    code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if code:
                        raise NetlinkError(code, str(what))
                    return answers  # the acknowledgement, or the end of a dump
                answers.append((msg_kind, payload))
                if not dump and not msg_flags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return answers


def _attrs(payload, offset):
    """{type: payload} of the attributes after a message's fixed header."""
    found = {}
    while offset + _RTA.size <= len(payload):
        length, kind = _RTA.unpack_from(payload, offset)
        if length < _RTA.size:
            break
        found[kind & 0x3FFF] = payload[offset + _RTA.size:offset + length]
        offset += (length + 3) & ~3
    return found


def _u32(data):
    return struct.unpack("=I", data[:4])[0] if data and len(data) >= 4 else None


def _ticks(seconds):
    """``seconds`` in packet scheduler ticks (64 ns each: PSCHED_SHIFT)."""
    return min(int(seconds * 1e9) >> 6, 0xFFFFFFFF)

"""Per-VE connection-tracking limits on the host side (OpenVZ's numtcpsock and
friends, for the host's conntrack table).

Every connection through the host is an entry in the host's conntrack table
(a global kernel table, 262,144 entries here, in memory no VE is charged
for): a VE that opens connections without end fills it and the host drops new
connections of everyone. Table ``inet ve_ct_<VEID>`` bounds a routed VE's
share, in the host namespace where its traffic is forwarded:

- connections the VE opens (new ones arriving from ``veth<VEID>``) and
  connections opened to it (new ones leaving through ``veth<VEID>``) each may
  hold at most ``numconn`` entries (``ct count over N drop``: the kernel's
  connlimit list of each rule; a new connection over it is dropped, which
  TCP and UDP senders see as a timeout);
- its connections get the VE's ID as their conntrack mark (those it opens
  always, those opened to it unless another VE marked them first), which
  is how ``entries`` counts them (a kernel-side filtered dump, not a walk of
  the table in Python); the host's own firewall must then leave ct marks
  of VE traffic alone;
- the drop rules count what they refused (``refused``: packets of new
  connections over the limit).

The table is written with ``nft -j`` from JSON built here out of validated
numbers and names; like the bridge guard it outlives the link and is removed
explicitly. Bridged VEs' frames are switched, not routed: the inet hooks do
not see them (no br_netfilter), so they get no table (docs/networking.md).
"""

import json
import subprocess

from . import guard, host_ifname

NFPROTO_INET = 1
PRIORITY = -150  # after conntrack (-200) made the entry, before anything filters
MARK_MASK = 0xFFFFFFFF


def table_name(veid):
    return f"ve_ct_{veid}"


def apply(veid, limit):
    """Install (or atomically replace) VE ``veid``'s limit; 0 removes it."""
    if not limit:
        remove(veid)
        return
    table = {"family": "inet", "name": table_name(veid)}
    name = host_ifname(veid)
    commands = [{"add": {"table": table}}, {"delete": {"table": table}},
                {"add": {"table": table}}]
    for chain, hook, key in (("from_ve", "prerouting", "iifname"),
                             ("to_ve", "postrouting", "oifname")):
        commands.append({"add": {"chain": {"family": "inet", "table": table["name"],
                                           "name": chain, "type": "filter", "hook": hook,
                                           "prio": PRIORITY, "policy": "accept"}}})
        link = {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": name}}
        new = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}
        rule = {"family": "inet", "table": table["name"], "chain": chain}
        commands.append({"add": {"rule": dict(rule, expr=[
            link, new, {"ct count": {"val": int(limit), "inv": True}}, {"counter": None},
            {"drop": None}])}})
        unmarked = [] if chain == "from_ve" else [
            {"match": {"op": "==", "left": {"ct": {"key": "mark"}}, "right": 0}}]
        commands.append({"add": {"rule": dict(rule, expr=[
            link, new, *unmarked,
            {"mangle": {"key": {"ct": {"key": "mark"}}, "value": int(veid)}}])}})
    guard.nft(commands)


def remove(veid):
    """Delete VE ``veid``'s table if there is one (also after a crashed start)."""
    if table_name(veid) in _tables():
        guard.nft([{"delete": {"table": {"family": "inet", "name": table_name(veid)}}}])


def refused(veid):
    """Packets of new connections the limit dropped this run (None without a table)."""
    if table_name(veid) not in _tables():
        return None
    out = subprocess.run(["nft", "-j", "list", "table", "inet", table_name(veid)],
                         capture_output=True, text=True, timeout=10)
    if out.returncode:
        return None
    total = 0
    for item in json.loads(out.stdout).get("nftables", []):
        for expr in item.get("rule", {}).get("expr", []):
            if isinstance(expr, dict) and "counter" in expr:
                total += expr["counter"].get("packets", 0)
    return total


def entries(veid):
    """Conntrack entries of this namespace that carry VE ``veid``'s mark."""
    from pyroute2.conntrack import Conntrack
    with Conntrack() as ct:
        return sum(1 for _ in ct.dump_entries(mark=int(veid), mark_mask=MARK_MASK))


def _tables():
    from pyroute2.nftables.main import NFTables
    with NFTables(nfgen_family=NFPROTO_INET) as nft:
        return {t.get_attr("NFTA_TABLE_NAME") for t in nft.get_tables()}

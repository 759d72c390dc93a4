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

All routed VEs share one table, ``inet ve_conntrack``: its two base chains
(made once per host namespace) send each packet through a verdict map keyed
by the interface to that VE's own chains ``ve_<VEID>_from`` / ``ve_<VEID>_to``,
so a packet costs one map lookup however many VEs the node runs, and a VE's
start adds plain chains and two map entries: no netfilter hook is registered
(a table of its own with base chains cost each start ~15 ms of hook
registration, and each packet one chain per VE). The rules are written with
``nft -j`` from JSON built here out of validated numbers and names; they
outlive the link and are removed explicitly. Bridged VEs' frames are
switched, not routed: the inet hooks do not see them (no br_netfilter), so
they get no chains (docs/networking.md).
"""

import json
import subprocess

from . import guard, host_ifname

PRIORITY = -150  # after conntrack (-200) made the entry, before anything filters
MARK_MASK = 0xFFFFFFFF
TABLE = "ve_conntrack"
# (VE chain suffix, verdict map, base chain, hook, interface key)
WAYS = (("from", "from_ve", "from_ves", "prerouting", "iifname"),
        ("to", "to_ve", "to_ves", "postrouting", "oifname"))


def chain_name(veid, way):
    """VE ``veid``'s chain for connections it opens (``from``) or that reach it (``to``)."""
    return f"ve_{veid}_{way}"


def apply(veid, limit):
    """Install (or atomically replace) VE ``veid``'s limit; 0 removes it."""
    (applying(veid, limit) if limit else removing(veid)).finish()


def applying(veid, limit):
    """Start installing VE ``veid``'s limit; ``.finish()`` waits for it (0: nothing
    to install, and nothing to wait for)."""
    if not limit:
        return _Step(None, None)
    return _Step(guard.Transaction(_ve_commands(veid, limit)), lambda: _made_anew(veid, limit))


def keeping(veid, limit):
    """Start checking that VE ``veid``'s limit, kept installed by its last stop, is
    still there: its map entries are added again (a no-op if they are there), which
    fails without its chains (a flushed ruleset); then it is made anew at
    ``.finish()``. Nothing is deleted, so nft waits for no RCU grace period."""
    return _Step(guard.Transaction(_entries(veid)), lambda: _made_anew(veid, limit))


def remove(veid, installed=None):
    """Delete VE ``veid``'s chains and map entries if it has them (also after a
    crashed start). ``installed``: True if the caller knows they were made (one
    transaction then, no listing), None to look first."""
    removing(veid, installed).finish()


def removing(veid, installed=None):
    """Start ``remove``; ``.finish()`` waits for it."""
    if installed:
        return _Step(guard.Transaction(_removal(veid, _WHOLE)), lambda: _remove_present(veid))
    return _Step(None, lambda: _remove_present(veid))


class _Step:
    """A transaction under way (or None) and what to do, synchronously, if nft refuses
    it or there is none (or None)."""

    def __init__(self, transaction, otherwise):
        self.transaction, self.otherwise = transaction, otherwise

    def finish(self, quietly=False):
        """Wait for it (the first call only); its error is raised unless ``quietly``."""
        transaction, otherwise = self.transaction, self.otherwise
        self.transaction = self.otherwise = None
        try:
            if transaction is not None:
                try:
                    transaction.finish()
                    return
                except OSError:
                    pass
            if otherwise is not None:
                otherwise()
        except Exception:
            if not quietly:
                raise


def _made_anew(veid, limit):
    """No shared table in this namespace yet (first VE, or the host's ruleset was
    flushed): make it in the same transaction. "create" fails if another start made
    it meanwhile; then only the VE's part is missing."""
    try:
        guard.nft(_table_commands() + _ve_commands(veid, limit))
    except OSError:
        guard.nft(_ve_commands(veid, limit))


def _remove_present(veid):
    """Delete what is left of VE ``veid``'s limit (part of it may be gone already),
    and the table of its own an engine before the shared table gave it."""
    present = _present(veid)
    if present:
        guard.nft(_removal(veid, present))
    try:
        guard.nft([{"delete": {"table": {"family": "inet", "name": f"ve_ct_{veid}"}}}])
    except OSError:
        pass  # none (the usual case)


def refused(veid):
    """Packets of new connections the limit dropped since it was installed (it stays
    across restarts: ve/net/links.py); None without a limit."""
    total = 0
    for way, *_ in WAYS:
        listing = _nft_json(["list", "chain", "inet", TABLE, chain_name(veid, way)])
        if listing is None:
            return None
        for item in listing:
            for expr in item.get("rule", {}).get("expr", []):
                if isinstance(expr, dict) and "counter" in expr:
                    total += expr["counter"].get("packets", 0)
    return total


def entries(veid):
    """Conntrack entries of this namespace that carry VE ``veid``'s mark."""
    from pyroute2.conntrack import Conntrack
    with Conntrack() as ct:
        return sum(1 for _ in ct.dump_entries(mark=int(veid), mark_mask=MARK_MASK))


def _table_commands():
    """The shared table: two verdict maps, and base chains that look them up."""
    commands = [{"create": {"table": {"family": "inet", "name": TABLE}}}]
    for _, vmap, base, hook, key in WAYS:
        commands.append({"add": {"map": {"family": "inet", "table": TABLE, "name": vmap,
                                         "type": "ifname", "map": "verdict"}}})
        commands.append({"add": {"chain": {"family": "inet", "table": TABLE, "name": base,
                                           "type": "filter", "hook": hook, "prio": PRIORITY,
                                           "policy": "accept"}}})
        commands.append({"add": {"rule": {"family": "inet", "table": TABLE, "chain": base,
                                          "expr": [{"vmap": {"key": {"meta": {"key": key}},
                                                             "data": f"@{vmap}"}}]}}})
    return commands


def _ve_commands(veid, limit):
    """The VE's chains (emptied first: a live change replaces their rules) and the
    map entries that send its interface's new connections there."""
    commands = []
    for way, vmap, *_ in WAYS:
        chain = {"family": "inet", "table": TABLE, "name": chain_name(veid, way)}
        commands += [{"add": {"chain": chain}}, {"flush": {"chain": chain}}]
        rule = {"family": "inet", "table": TABLE, "chain": chain["name"]}
        new = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}
        commands.append({"add": {"rule": dict(rule, expr=[
            new, {"ct count": {"val": int(limit), "inv": True}}, {"counter": None},
            {"drop": None}])}})
        # Connections it opens are always its own; those opened to it unless
        # another VE marked them first.
        unmarked = [] if way == "from" else [
            {"match": {"op": "==", "left": {"ct": {"key": "mark"}}, "right": 0}}]
        commands.append({"add": {"rule": dict(rule, expr=[
            new, *unmarked, {"mangle": {"key": {"ct": {"key": "mark"}}, "value": int(veid)}}])}})
    return commands + _entries(veid)


def _entries(veid):
    """The map entries that send VE ``veid``'s interface's new connections to its chains."""
    return [{"add": {"element": {"family": "inet", "table": TABLE, "name": vmap,
                                 "elem": [[host_ifname(veid),
                                           {"jump": {"target": chain_name(veid, way)}}]]}}}
            for way, vmap, *_ in WAYS]


_WHOLE = frozenset(("element from", "element to", "chain from", "chain to"))


def _removal(veid, parts):
    """Commands deleting ``parts`` ("element from", "chain to", ...) of VE ``veid``;
    map entries first (a chain is deleted only once nothing jumps to it)."""
    commands = []
    for way, vmap, *_ in WAYS:
        if f"element {way}" in parts:
            commands.append({"delete": {"element": {"family": "inet", "table": TABLE,
                                                    "name": vmap, "elem": [host_ifname(veid)]}}})
    for way, *_ in WAYS:
        if f"chain {way}" in parts:
            commands.append({"delete": {"chain": {"family": "inet", "table": TABLE,
                                                  "name": chain_name(veid, way)}}})
    return commands


def _present(veid):
    """Which parts of VE ``veid``'s limit the shared table holds (a listing of it)."""
    listing = _nft_json(["list", "table", "inet", TABLE])
    found = set()
    for item in listing or ():
        for way, vmap, *_ in WAYS:
            if item.get("chain", {}).get("name") == chain_name(veid, way):
                found.add(f"chain {way}")
            if item.get("map", {}).get("name") == vmap:
                keys = {e[0] if isinstance(e, list) else e for e in item["map"].get("elem", [])}
                if host_ifname(veid) in keys:
                    found.add(f"element {way}")
    return found


def _nft_json(words):
    """The objects ``nft -j <words>`` lists (words: fixed names and validated
    numbers), or None if nft refused (what it lists does not exist)."""
    try:
        out = subprocess.run(["nft", "-j", *words], capture_output=True, text=True, timeout=10)
        if out.returncode:
            return None
        return json.loads(out.stdout or "{}").get("nftables", [])
    except (subprocess.TimeoutExpired, ValueError) as exc:  # callers handle OSError
        raise OSError(f"nft {' '.join(words)}: {exc}") from exc

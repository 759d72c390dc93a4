"""Traffic counters of a VE that survive its restarts.

The kernel's counters live on the host-side link and vanish with it, so at
every stop the engine adds them to the totals kept in
``<VE_ROOT>/net/<VEID>.counters`` (line 1), with the link's index and the
values already added (line 2), so a link still up after the save is never
counted twice.
Directions are the VE's: its rx is what the host side sent.
"""

import os

from ..fsutil import atomic_write

FIELDS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")


def from_link(link):
    """The VE's view of a host-side link's statistics."""
    stats = link.get("IFLA_STATS64") or link.get("IFLA_STATS") or {}
    return {"rx_bytes": stats.get("tx_bytes", 0), "tx_bytes": stats.get("rx_bytes", 0),
            "rx_packets": stats.get("tx_packets", 0), "tx_packets": stats.get("rx_packets", 0)}


def saved(path):
    """The totals counted so far (zeros for a new VE)."""
    return _read(path)[0]


def total(path, link):
    """Totals including the running ``link`` (None: no link), never counting a byte twice."""
    totals, counted = _read(path)
    if link is None:
        return totals
    return add(totals, _uncounted(link, counted))


def save_link(path, link):
    """Add what ``link`` counted since the last save to the totals (a stop does this).

    The link's values are remembered with its ifindex, so saving again, or
    reading totals while the link lingers, adds only what is new.
    """
    totals, counted = _read(path)
    totals = add(totals, _uncounted(link, counted))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    now = from_link(link)
    atomic_write(path, " ".join(str(totals[f]) for f in FIELDS) + "\n"
                 + " ".join(str(v) for v in [link["index"]] + [now[f] for f in FIELDS]) + "\n")


def add(a, b):
    return {field: a.get(field, 0) + b.get(field, 0) for field in FIELDS}


def _uncounted(link, counted):
    now = from_link(link)
    if counted and counted[0] == link["index"]:
        return {f: max(0, now[f] - counted[1][f]) for f in FIELDS}
    return now


def _read(path):
    """(totals, (ifindex, values counted of that link) or None)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
        totals = dict(zip(FIELDS, map(int, lines[0].split())))
        counted = None
        if len(lines) > 1:
            index, *values = map(int, lines[1].split())
            counted = (index, dict(zip(FIELDS, values)))
        return totals, counted
    except (FileNotFoundError, ValueError, IndexError):
        return dict.fromkeys(FIELDS, 0), None

"""Traffic counters of a VE that survive its restarts.

The kernel's counters live on the host-side link and vanish with it, so at
every stop the engine adds them to the totals kept in
``<VE_ROOT>/net/<VEID>.counters``.
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
    """The totals of the VE's earlier runs (zeros for a new VE)."""
    try:
        with open(path) as f:
            values = f.read().split()
        return dict(zip(FIELDS, map(int, values)))
    except (FileNotFoundError, ValueError):
        return dict.fromkeys(FIELDS, 0)


def add(a, b):
    return {field: a.get(field, 0) + b.get(field, 0) for field in FIELDS}


def save(path, totals):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, " ".join(str(totals[f]) for f in FIELDS) + "\n")

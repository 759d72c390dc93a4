"""Usage samples: raw every NODE_SAMPLE_SECONDS, rolled up to 5 minutes and to hours.

A raw sample keeps the engine's figures as they are: gauges (RAM the VE
needs, i.e. its working set; the reclaimable file cache apart; swap,
processes, disk, inodes) and cumulative counters (CPU time, traffic, block
I/O, limit hits, OOM kills). Rates come from consecutive samples when rolling
up: a counter that went down (the VE restarted, a new cgroup) starts a new
series, and that interval counts nothing. Rollups keep avg, max and p95
(nearest rank) per metric; events (limit hits, OOM kills) are summed.

Retention (per VE and per node alike, so growth is bounded: ~2,900 raw +
8,640 five-minute + 8,760 hourly rows, about 20,300 rows whatever its age):
raw 1 day, 5-minute 30 days, hourly 365 days.
"""

from collections import namedtuple
from datetime import timedelta

# conntrack: connections the VE holds in its node's table (routed VEs with a cap)
GAUGES = ("ram", "ram_cache", "swap", "processes", "disk", "inodes", "conntrack")
# rate metric -> (cumulative field, unit divisor): CPU in CPUs busy, packets in
# packets/s, the rest bytes/s
COUNTERS = {"cpu": ("cpu_ns", 10**9), "rx": ("rx_bytes", 1), "tx": ("tx_bytes", 1),
            "rx_packets": ("rx_packets", 1), "tx_packets": ("tx_packets", 1),
            "io_read": ("io_read_bytes", 1), "io_write": ("io_write_bytes", 1)}
# conntrack_refused: new connections the VE's cap dropped (cumulative since the cap was
# set on its node; a move or a change of the cap starts it again)
EVENTS = {"limit_hits": "memory_failcnt", "oom_kills": "oom_kills",
          "conntrack_refused": "conntrack_refused"}
METRICS = GAUGES + tuple(COUNTERS)


class Kind(namedtuple("Kind", "gauges counters events")):
    """What a raw sample holds: gauge fields, counters (rate name -> (field, divisor)),
    and events (name -> cumulative field, summed as increases)."""

    @property
    def metrics(self):
        return self.gauges + tuple(self.counters)


VE = Kind(GAUGES, COUNTERS, EVENTS)
# A node's own totals (NodeSample): CPU in CPUs busy, the rest as measured.
NODE = Kind(("ram_used", "swap_used", "disk_used", "load1"), {"cpu": ("cpu_busy_ns", 10**9)},
            {})
RAW_KEEP = timedelta(days=1)
FIVE_MINUTES, HOUR = 300, 3600
KEEP = {FIVE_MINUTES: timedelta(days=30), HOUR: timedelta(days=365)}


def p95(values):
    """Nearest-rank 95th percentile (a value that occurred), None for no values."""
    return percentile(values, 95)


def percentile(values, percent):
    """Nearest rank: the ceil(n * percent / 100)-th smallest (whole-number arithmetic,
    so no rounding moves the rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * percent // 100) - 1)]


def median(values):
    """The median of ``values`` (the mean of the middle two for an even count), None
    for none: the one median of the dashboard (plans' shares, each VE's usual hour)."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarize(values):
    """(avg, max, p95) of ``values``; Nones when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    return sum(values) / len(values), max(values), p95(values)


def series(samples, previous=None, kind=VE):
    """Per-metric values of a time-ordered run of raw samples (dicts) of ``kind``.

    Gauges are the samples' own values; counters become per-second rates
    over each interval (CPU: CPUs busy), and events the increase per
    interval. ``previous`` is the sample before the run, for its first
    interval. A counter that went down (a restart) gives no value there.
    """
    out = {name: [] for name in kind.metrics + tuple(kind.events)}
    last = previous
    for sample in samples:
        for name in kind.gauges:
            out[name].append(sample.get(name))
        for name, (field, divisor) in kind.counters.items():
            out[name].append(_rate(last, sample, field, divisor))
        for name, field in kind.events.items():
            out[name].append(_increase(last, sample, field))
        last = sample
    return out


def _rate(before, after, field, divisor):
    increase = _increase(before, after, field)
    if increase is None:
        return None
    seconds = (after["time"] - before["time"]).total_seconds()
    return increase / divisor / seconds if seconds > 0 else None


def _increase(before, after, field):
    if before is None or before.get(field) is None or after.get(field) is None:
        return None
    delta = after[field] - before[field]
    return delta if delta >= 0 else None  # reset: a new series starts here


def bucket_start(moment, seconds):
    """The start of the ``seconds``-long bucket holding ``moment`` (aligned to the epoch)."""
    stamp = int(moment.timestamp())
    return moment - timedelta(seconds=stamp % seconds, microseconds=moment.microsecond)

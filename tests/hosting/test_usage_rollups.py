"""Usage samples: stored from a real engine sample, rolled up exactly, pruned to bounds."""

from datetime import datetime, timedelta, timezone

import pytest

from hosting.environments.models import VirtualEnvironment as VE
from hosting.usage import collection, sampling
from hosting.usage.models import NodeRollup, NodeSample, UsageRollup, UsageSample

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)  # a 5-minute and hour boundary
GiB = 1 << 30


@pytest.fixture
def ve(catalogue):
    return VE.objects.create(veid=301, owner=catalogue["customer"], plan=catalogue["plan"],
                             node=catalogue["node"], template=catalogue["template"],
                             hostname="graphs.example.com", actual_state="running")


def raw(ve, seconds, **values):
    return UsageSample.objects.create(environment=ve, time=T0 + timedelta(seconds=seconds),
                                      **values)


def test_a_five_minute_rollup_matches_the_hand_computed_series(ve):
    # Ten samples 30 s apart in [10:00, 10:05), and the first of the next period.
    ram = [100, 300, 200, 400, 500, 100, 200, 300, 900, 100]  # MiB
    cpu_seconds = [0, 15, 30, 60, 60, 75, 90, 120, 150, 151]  # cumulative CPU time
    rx = [0, 3000, 6000, 6000, 9000, 0, 3000, 6000, 9000, 12000]  # reset after the 5th
    for i in range(10):
        raw(ve, 30 * i, ram=ram[i] << 20, cpu_ns=int(cpu_seconds[i] * 1e9), rx_bytes=rx[i],
            rx_packets=rx[i] // 100,
            memory_failcnt=i // 3, oom_kills=1 if i >= 8 else 0, processes=5 + i)
    raw(ve, 300, ram=0, cpu_ns=int(160e9), rx_bytes=15000, memory_failcnt=3, oom_kills=1,
        processes=0)
    made = collection.roll_up(now=T0 + timedelta(seconds=300 + collection.GRACE_SECONDS))
    assert made == 1  # the 10:05 period is not complete; the hour neither
    row = UsageRollup.objects.get(resolution=300)
    assert (row.time, row.samples) == (T0, 10)
    # RAM: avg 310 MiB, max 900, p95 = nearest rank ceil(9.5) = 10th of the sorted = 900.
    assert row.ram_avg == 310 * (1 << 20) and row.ram_max == 900 * (1 << 20)
    assert row.ram_p95 == 900 * (1 << 20)
    # CPU: nine intervals of 30 s: busy CPUs 0.5,0.5,1,0,0.5,0.5,1,1,1/30.
    cpus = [0.5, 0.5, 1.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1 / 30]
    assert row.cpu_avg == pytest.approx(sum(cpus) / 9)
    assert row.cpu_max == 1.0 and row.cpu_p95 == 1.0
    # Traffic: the reset interval (9000 -> 0) counts nothing; the others 100 B/s or 0.
    rates = [100, 100, 0, 100, 100, 100, 100, 100]
    assert row.rx_avg == pytest.approx(sum(rates) / 8) and row.rx_max == 100
    assert row.rx_packets_avg == pytest.approx(sum(rates) / 8 / 100)  # packets/s likewise
    # Events: failcnt went 0->3 over the period (+1 at samples 3, 6, 9), OOM kills +1.
    assert (row.limit_hits, row.oom_kills) == (3, 1)
    assert (row.processes_avg, row.processes_max) == (9.5, 14)
    assert row.disk_avg is None  # no disk figures: nothing invented


def test_the_next_run_continues_where_the_last_stopped(ve):
    for i in range(20):  # 10:00 .. 10:09:30, RAM i MiB
        raw(ve, 30 * i, ram=i << 20, cpu_ns=i * 10**9)
    collection.roll_up(now=T0 + timedelta(minutes=6))
    # 10:05-10:10 is complete only once a later sample is in (the node's clock may lag).
    collection.roll_up(now=T0 + timedelta(minutes=11))
    assert UsageRollup.objects.filter(resolution=300).count() == 1
    raw(ve, 600, ram=99 << 20, cpu_ns=20 * 10**9)
    collection.roll_up(now=T0 + timedelta(minutes=11))
    collection.roll_up(now=T0 + timedelta(minutes=11))  # again: nothing new
    rows = list(UsageRollup.objects.filter(resolution=300).order_by("time"))
    assert [r.time for r in rows] == [T0, T0 + timedelta(minutes=5)]
    assert [r.ram_avg for r in rows] == [4.5 * (1 << 20), 14.5 * (1 << 20)]
    # The second period's first interval uses the first period's last sample.
    assert rows[1].cpu_avg == pytest.approx(1 / 30) and rows[1].samples == 10


def test_an_hour_rolls_up_from_the_raw_samples(ve):
    for i in range(120):  # one hour, 30 s apart
        raw(ve, 30 * i, ram=(i % 10) << 20)
    raw(ve, 3600, ram=0)
    collection.roll_up(now=T0 + timedelta(hours=1, minutes=2))
    hour = UsageRollup.objects.get(resolution=3600)
    assert hour.samples == 120 and hour.ram_avg == 4.5 * (1 << 20)
    assert hour.ram_p95 == 9 * (1 << 20)
    assert UsageRollup.objects.filter(resolution=300).count() == 12


def test_a_nodes_own_totals_roll_up_too(catalogue):
    node = catalogue["node"]
    busy = [0, 30, 90, 90, 150]  # CPU seconds busy, cumulative: 1, 2, 0, 2 CPUs
    for i, seconds in enumerate(busy):
        NodeSample.objects.create(node=node, time=T0 + timedelta(seconds=30 * i),
                                  cpu_busy_ns=seconds * 10**9, cpus=4, ram_used=(i + 1) * GiB,
                                  ram_total=8 * GiB, swap_used=0, disk_used=10 * GiB,
                                  disk_total=100 * GiB, load1=i)
    NodeSample.objects.create(node=node, time=T0 + timedelta(seconds=300), cpu_busy_ns=0,
                              cpus=4, ram_used=0, ram_total=8 * GiB, swap_used=0, disk_used=0,
                              disk_total=100 * GiB, load1=0)
    assert collection.roll_up(now=T0 + timedelta(minutes=7)) == 1
    row = NodeRollup.objects.get()
    assert (row.resolution, row.time, row.samples) == (300, T0, 5)
    assert row.cpu_avg == pytest.approx(5 / 4) and row.cpu_max == 2 and row.cpu_p95 == 2
    assert row.ram_used_avg == 3 * GiB and row.ram_used_max == 5 * GiB
    assert (row.load1_avg, row.disk_used_p95) == (2, 10 * GiB)


def test_pruning_keeps_the_documented_bounds(ve):
    now = T0 + timedelta(days=400)
    for hours in (1, 23, 25, 48):
        raw(ve, (400 * 24 - hours) * 3600, ram=1)
    for days, resolution in ((29, 300), (31, 300), (364, 3600), (366, 3600)):
        UsageRollup.objects.create(environment=ve, resolution=resolution, samples=1,
                                   time=now - timedelta(days=days))
        NodeRollup.objects.create(node=ve.node, resolution=resolution, samples=1,
                                  time=now - timedelta(days=days))
    deleted = collection.prune(now=now)
    assert deleted == {"raw": 2, 300: 2, 3600: 2}
    assert UsageSample.objects.count() == 2  # the last day
    assert sorted(UsageRollup.objects.values_list("resolution", flat=True)) == [300, 3600]
    assert sorted(NodeRollup.objects.values_list("resolution", flat=True)) == [300, 3600]


def test_an_engine_sample_is_stored_for_known_ves_only(ve, catalogue):
    sample = {"time": T0.timestamp(),
              "node": {"cpu_busy_ns": 10**12, "cpus": 4, "ram_total": 8 * GiB,
                       "ram_used": 2 * GiB, "swap_total": 0, "swap_used": 0, "load1": 0.5,
                       "disk_total": 500 * GiB, "disk_used": 50 * GiB},
              "ves": [{"veid": 301, "state": "running", "cpu_ns": 5, "ram_bytes": 64 << 20,
                       "swap_bytes": 0, "processes": 3, "disk_used": 1 << 20,
                       "inodes_used": 300, "rx_bytes": 10, "tx_bytes": 20,
                       "rx_packets": 1, "tx_packets": 2,
                       "io_read_bytes": 0, "io_write_bytes": 0, "memory_failcnt": 0,
                       "oom_kills": 0},
                      {"veid": 999, "state": "running", "cpu_ns": 1}]}  # not the dashboard's
    assert collection.store("hn1", sample) == 1
    stored = UsageSample.objects.get()
    assert (stored.environment_id, stored.time, stored.ram, stored.inodes) == \
        (ve.pk, T0, 64 << 20, 300)
    assert (stored.rx_packets, stored.tx_packets) == (1, 2)
    node = NodeSample.objects.get()
    assert (node.cpus, node.ram_used, node.disk_total) == (4, 2 * GiB, 500 * GiB)


def test_p95_is_the_nearest_rank():
    assert sampling.p95(list(range(1, 101))) == 95
    assert sampling.p95([3]) == 3 and sampling.p95([]) is None
    assert sampling.p95([1, 2]) == 2


def test_housekeeping_re_measures_what_placement_reads_once_an_hour(ve):
    from django.utils import timezone as django_tz

    from hosting.usage import capacity, tasks
    from hosting.usage.models import NodeLoad
    hour = django_tz.now().replace(minute=0, second=0, microsecond=0)
    UsageRollup.objects.bulk_create(
        UsageRollup(environment=ve, resolution=3600, samples=120, ram_avg=(i + 1) << 20,
                    cpu_avg=0.5, time=hour - timedelta(hours=i + 1)) for i in range(20))
    tasks.roll_up_usage()
    load = NodeLoad.objects.get()
    assert (load.ram_p95, load.measured) == (19 << 20, [ve.pk])  # 19th of 20 sorted
    assert not capacity.due()
    tasks.roll_up_usage()  # within the hour: the stored measurement stays
    assert NodeLoad.objects.get().computed_at == load.computed_at
    assert capacity.due(now=load.computed_at + capacity.REFRESH)
    from django.db import connection
    if connection.vendor != "sqlite":
        return  # PostgreSQL's autovacuum keeps its own statistics
    with connection.cursor() as cursor:  # the SQLite planner has statistics to go by
        cursor.execute("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'usage_usagerollup'")
        assert cursor.fetchone()[0] > 0

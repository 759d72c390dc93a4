"""Connection tracking in the usage path: the node's samples to rows, rollups and graphs
(issue 14: "shown in the VE's counters")."""

from datetime import datetime, timedelta, timezone

import pytest

from hosting.environments.models import VirtualEnvironment as VE
from hosting.usage import collection, connections, graphs
from hosting.usage.models import UsageRollup, UsageSample

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)  # a 5-minute boundary
NODE = {"cpu_busy_ns": 1, "cpus": 4, "ram_total": 1, "ram_used": 1, "swap_total": 0,
        "swap_used": 0, "load1": 0, "disk_total": 1, "disk_used": 1}


@pytest.fixture
def ve(catalogue):
    catalogue["plan"].connections = 40
    catalogue["plan"].save()
    return VE.objects.create(veid=311, owner=catalogue["customer"], plan=catalogue["plan"],
                             node=catalogue["node"], template=catalogue["template"],
                             hostname="ct.example.com", actual_state="running")


def _sample(seconds, held, refused, veid=311):
    return {"time": (T0 + timedelta(seconds=seconds)).timestamp(), "node": NODE,
            "ves": [{"veid": veid, "state": "running", "conntrack": held,
                     "conntrack_refused": refused}]}


def test_the_engines_figures_are_stored_with_the_sample(ve):
    assert collection.store("hn1", _sample(0, 17, 3)) == 1
    row = UsageSample.objects.get()
    assert (row.conntrack, row.conntrack_refused) == (17, 3)


def test_no_cap_or_a_bridged_ve_stores_nothing_rather_than_zero(ve):
    collection.store("hn1", _sample(0, None, None))
    row = UsageSample.objects.get()
    assert (row.conntrack, row.conntrack_refused) == (None, None)


def test_a_rollup_keeps_the_held_figures_and_sums_the_refusals(ve):
    # 10 samples 30 s apart in [10:00, 10:05), then one of the next period.
    for i in range(11):
        collection.store("hn1", _sample(30 * i, 10 + i, 5 * i))
    collection.roll_up(now=T0 + timedelta(hours=2))
    row = UsageRollup.objects.get(resolution=300, time=T0)
    assert row.conntrack_max == 19 and row.conntrack_avg == pytest.approx(14.5)
    # the increases within the period: 9 intervals of 5 (the first has no "before")
    assert row.conntrack_refused == 45


def test_a_restart_resets_the_refusal_counter_without_a_negative_count(ve):
    for i, refused in enumerate([10, 20, 2, 4]):  # the VE restarted after the second
        collection.store("hn1", _sample(30 * i, 5, refused))
    collection.store("hn1", _sample(300, 5, 6))
    collection.roll_up(now=T0 + timedelta(hours=2))
    assert UsageRollup.objects.get(resolution=300, time=T0).conntrack_refused == 12


def test_the_graphs_carry_the_series_the_limit_and_the_latest_figures(ve):
    now = T0 + timedelta(seconds=61)
    for i, (held, refused) in enumerate([(3, 0), (20, 7), (20, 9)]):
        collection.store("hn1", _sample(30 * i, held, refused))
    data = graphs.usage(ve, "1h", now=now)
    assert data["conntrack"] == [3, 20, 20]
    assert data["conntrack_refused"] == [None, 7, 2]  # per interval
    assert data["limits"]["conntrack"] == 40
    assert data["connections"] == {"held": 20, "refused": 9, "limit": 40,
                                   "time": (T0 + timedelta(seconds=60)).timestamp()}


def test_old_figures_are_not_shown_as_current(ve, settings):
    settings.NODE_SAMPLE_SECONDS = 30
    collection.store("hn1", _sample(0, 20, 9))
    stale = connections.current(ve, now=T0 + timedelta(seconds=30 * connections.STALE_SAMPLES
                                                       + 1))
    assert (stale["held"], stale["refused"], stale["limit"]) == (None, None, 40)


def test_rollups_give_the_longer_ranges(ve):
    now = T0 + timedelta(hours=1)
    UsageRollup.objects.create(environment=ve, resolution=300, time=T0, samples=10,
                               conntrack_avg=12.5, conntrack_refused=4)
    data = graphs.usage(ve, "24h", now=now)
    assert data["conntrack"][-1] == 12.5 and data["conntrack_refused"][-1] == 4

"""What keeps the usage pages fast on a big fleet: period figures stored by
housekeeping (older ones standing in for at most a rollup run, never computed in a
request while one is kept), and /metrics in a fixed number of queries."""

from datetime import datetime, timedelta, timezone

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone as django_tz

from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node
from hosting.usage import figures, reports, tasks
from hosting.usage.models import NodeSample, PeriodFigure, UsageRollup, UsageSample
from hosting.usage.period import REPORT_DAYS, Period
from tests.staffing import make_staff, verified_login

pytestmark = pytest.mark.django_db

MiB = 1 << 20
NOW = datetime(2026, 11, 3, 0, 0, tzinfo=timezone.utc)
HOURS = 40  # more than the 1-day period, less than the 7-day one


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def make_ve(catalogue, node, veid, state="running", created=NOW - timedelta(days=90)):
    """A VE made at ``created``: by default long before the fixtures' rollups, as a VE
    with history is (an order of the current hour has none: period.py)."""
    ve = VE.objects.create(veid=veid, owner=catalogue["customer"], plan=catalogue["plan"],
                           node=node, template=catalogue["template"],
                           hostname=f"v{veid}.example.com", actual_state=state)
    VE.objects.filter(pk=ve.pk).update(created=created)  # auto_now_add ignores a value
    ve.created = created
    return ve


@pytest.fixture
def usage(catalogue):
    """Two nodes; VEs with uneven hourly usage (missing RAM and disk figures, one young
    VE with fewer than MIN_HOURS, one destroyed VE whose rows must not count)."""
    second = Node.objects.create(name="hn2", state="online", ram_bytes=16 << 30, cpus=8,
                                 disk_bytes=500 << 30)
    nodes = [catalogue["node"], second]
    ves = [make_ve(catalogue, nodes[i % 2], 200 + i) for i in range(6)]
    young = make_ve(catalogue, second, 300)
    gone = make_ve(catalogue, second, 301, state="destroyed")
    rows = []
    for i, ve in enumerate(ves + [young, gone]):
        for hour in range(8 if ve is young else HOURS):
            missing = (i + hour) % 11 == 0
            rows.append(UsageRollup(
                environment=ve, resolution=3600, samples=120,
                time=NOW - timedelta(hours=hour + 1),
                ram_avg=None if missing else ((i * 7 + hour * 13) % 17 + 1) * MiB,
                cpu_avg=((i + hour * 3) % 5) / 10, rx_avg=i * 100.0, tx_avg=hour * 10.0,
                disk_max=None if missing else (i + 1) * 100 * MiB + hour))
    UsageRollup.objects.bulk_create(rows)
    return {"nodes": nodes, "ves": ves, "young": young, "gone": gone}


def fresh(days, now=NOW):
    """Every stored figure of the ``days`` period, computed now from the rollups."""
    period = Period(days, now)
    return {"per-ve": period._measure_per_ve(), "all_totals": period._all_totals(),
            "last_disk": period._last_disk()}


def test_figures_survive_their_encoding():
    value = {1: (0.1 + 0.2, None), 2.5: [(1, 2.0), (3, float("inf"))], "a": {"b": [True]},
             "at": NOW, "empty": {}, "nested": ({7: NOW},)}
    assert figures.decode(figures.encode(value)) == value
    with pytest.raises(TypeError):
        figures.encode({1: {2, 3}})


def test_housekeeping_stores_figures_equal_to_a_fresh_computation(usage):
    run = NOW + timedelta(minutes=2)  # the run after the hour's rollups
    assert tasks.after_rollups(now=run) > 0
    for days in REPORT_DAYS:
        version = Period(days, run)._version
        for name, value in fresh(days, run).items():
            assert figures.load(days, name, version) == value, (days, name)
    per_ve = fresh(30, run)["per-ve"]
    assert usage["gone"].pk not in per_ve["hours"]
    assert per_ve["hours"][usage["young"].pk] == 8 and per_ve["hours"][usage["ves"][0].pk] == 40
    assert set(per_ve["filled"]) == {node.pk for node in usage["nodes"]}
    recent, long = Period(30, run), Period(60, run)
    assert figures.load(30, "tight", recent._version) == reports._tight(recent)
    assert figures.load(60, "idle", long._version) == reports._idle(long)
    # Everything current: a later run in the same hour computes nothing.
    stored = PeriodFigure.objects.count()
    assert tasks.after_rollups(now=run + timedelta(minutes=30)) == 0
    assert PeriodFigure.objects.count() == stored


def test_the_last_run_of_the_hour_stores_the_next_hours_figures(usage, monkeypatch):
    """Each period drops its oldest hour when the hour turns; a view after that and
    before the next run must still find its figures stored."""
    tasks.after_rollups(now=NOW - timedelta(minutes=10))  # not the last run of the hour
    assert not figures.has(30, "per-ve", Period(30, NOW + timedelta(minutes=1))._version)
    tasks.after_rollups(now=NOW - timedelta(minutes=3))  # the next run is after the hour
    after = NOW + timedelta(minutes=1)
    want = fresh(30, after)
    cache.clear()

    def refuse(*args):
        raise AssertionError("computed on demand")
    monkeypatch.setattr(Period, "_measure_per_ve", refuse)
    monkeypatch.setattr(Period, "_all_totals", refuse)
    period = Period(30, after)
    assert (period.ram_p95, period.all_totals) == (want["per-ve"]["ram_p95"],
                                                   want["all_totals"])
    # The hour that dropped out is not in the next hour's figures.
    assert len(Period(1, after).all_totals[usage["nodes"][0].pk]) == 23


def test_a_period_reads_the_stored_figures_when_current(usage):
    tasks.after_rollups(now=NOW)
    cache.clear()
    want, period = fresh(30), Period(30, NOW)
    with CaptureQueriesContext(connection) as queries:
        assert (period.ram_p95, period.cpu_p95, period.medians, period.measured_totals,
                period.hours, period.all_totals) == (
            want["per-ve"]["ram_p95"], want["per-ve"]["cpu_p95"], want["per-ve"]["medians"],
            want["per-ve"]["filled"], want["per-ve"]["hours"], want["all_totals"])
    # What it read: the version's two aggregates and two stored rows, no rollup rows.
    read = [q["sql"] for q in queries.captured_queries]
    assert len(read) == 4 and sum("usage_periodfigure" in sql for sql in read) == 2
    assert not any("ram_avg" in sql for sql in read)


def test_older_figures_stand_in_until_housekeeping_stores_the_current_ones(usage,
                                                                           monkeypatch):
    asked = []
    monkeypatch.setattr("hosting.operations.dispatch.publish",
                        lambda task, args, queue: asked.append((task, queue)))
    period = Period(1, NOW)
    figures.save(1, "last_disk", period._version, {"older": True})
    assert Period(1, NOW).last_disk == {"older": True}  # current: read as stored
    assert asked == []
    # A new hourly rollup (of an hour already in the period: a node catching up) is new
    # data: the older figure stands in, nothing is computed in the request, and
    # housekeeping is asked (once) to store the current one.
    cache.clear()
    UsageRollup.objects.filter(environment=usage["ves"][0], time=NOW - timedelta(hours=1)) \
        .delete()
    UsageRollup.objects.create(environment=usage["ves"][0], resolution=3600, samples=120,
                               time=NOW - timedelta(hours=1), disk_max=12345.0)
    with monkeypatch.context() as no_computing:
        no_computing.setattr(Period, "_last_disk", lambda self: pytest.fail("computed"))
        assert Period(1, NOW, stand_in=True).last_disk == {"older": True}
        assert Period(1, NOW + timedelta(minutes=1), stand_in=True).last_disk == {"older": True}
    assert asked == [("hosting.usage.tasks.store_figures", "hosting")]
    # Placement's measurement takes no stand-in: it computes (and stores) the current one.
    assert Period(1, NOW).last_disk == fresh(1)["last_disk"]
    assert Period(1, NOW).last_disk[usage["ves"][0].pk] == 12345.0
    PeriodFigure.objects.filter(version=Period(1, NOW)._version).delete()
    tasks.after_rollups(now=NOW)  # what that task (and each rollup run) does
    cache.clear()
    assert Period(1, NOW).last_disk == fresh(1)["last_disk"]
    assert Period(1, NOW).last_disk[usage["ves"][0].pk] == 12345.0
    # A VE moved to another node is new data too.
    VE.objects.filter(pk=usage["ves"][0].pk).update(node=usage["nodes"][1])
    assert figures.load(1, "last_disk", Period(1, NOW)._version) is None
    tasks.after_rollups(now=NOW)
    assert figures.load(1, "last_disk", Period(1, NOW)._version) == fresh(1)["last_disk"]


def test_an_order_of_this_hour_is_no_new_data_but_a_moved_or_gone_ve_is(usage,
                                                                          catalogue):
    """A VE made since the newest rollup's hour has no rollup: the figures stay current
    (housekeeping computes nothing for it); one with rollups destroyed, deleted or moved,
    or a new rollup, is new data."""
    run = NOW + timedelta(minutes=15)  # in the hour after the newest rollup's
    tasks.after_rollups(now=run)
    before = Period(30, run)._version
    new = make_ve(catalogue, usage["nodes"][0], 400, created=NOW + timedelta(minutes=10))
    assert Period(30, run)._version == before
    assert tasks.after_rollups(now=run + timedelta(minutes=5)) == 0
    VE.objects.filter(pk=new.pk).update(node=usage["nodes"][1], actual_state="destroyed")
    VE.objects.filter(pk=new.pk).delete()
    assert Period(30, run)._version == before
    versions = {before}
    for change in (
            lambda: VE.objects.filter(pk=usage["ves"][0].pk).update(actual_state="destroyed"),
            lambda: VE.objects.filter(pk=usage["ves"][1].pk).update(node=usage["nodes"][0]),
            lambda: VE.objects.filter(pk=usage["ves"][2].pk).delete(),
            lambda: UsageRollup.objects.create(environment=usage["ves"][3], resolution=3600,
                                               samples=120, time=NOW - timedelta(hours=50))):
        change()
        version = Period(30, run)._version
        assert version not in versions
        versions.add(version)
    assert tasks.after_rollups(now=run + timedelta(minutes=10)) > 0
    # A node clock lagging ours dates a new VE's first samples before it was made: its
    # rollup is new data, and so is its end.
    lagging = make_ve(catalogue, usage["nodes"][0], 401, created=NOW + timedelta(minutes=20))
    UsageRollup.objects.create(environment=lagging, resolution=3600, samples=1,
                               time=NOW - timedelta(hours=1), ram_avg=MiB)
    with_rollup = Period(30, run)._version
    assert with_rollup not in versions
    VE.objects.filter(pk=lagging.pk).update(actual_state="destroyed")
    assert Period(30, run)._version not in versions | {with_rollup}


def test_figures_older_than_kept_are_computed_afresh(usage):
    figures.save(1, "last_disk", "an old version", {"older": True})
    PeriodFigure.objects.update(computed_at=NOW - figures.KEEP - timedelta(minutes=1))
    want = fresh(1)["last_disk"]
    assert want and Period(1, NOW, stand_in=True).last_disk == want


def test_a_figure_computed_on_demand_is_stored(usage):
    assert not PeriodFigure.objects.exists()
    period = Period(7, NOW)
    assert period.last_disk == fresh(7)["last_disk"]
    assert figures.load(7, "last_disk", period._version) == period.last_disk


def test_old_figures_are_pruned(usage):
    figures.save(1, "x", "old", 1)
    figures.save(1, "x", "new", 2)
    PeriodFigure.objects.filter(version="old").update(
        computed_at=django_tz.now() - figures.KEEP - timedelta(minutes=1))
    assert figures.prune() == 1
    assert list(PeriodFigure.objects.values_list("version", flat=True)) == ["new"]


def test_the_cold_overcommit_page_computes_nothing_housekeeping_stored(usage, client,
                                                                        monkeypatch):
    now = django_tz.now()  # the page's period ends now: the usage moves to the last hours
    UsageRollup.objects.update(time=F("time") + (now.replace(minute=0, second=0,
                                                              microsecond=0) - NOW))
    tasks.after_rollups(now=now)
    cache.clear()

    def refuse(*args):
        raise AssertionError("computed per request")
    for name in ("_measure_per_ve", "_all_totals", "_last_disk"):
        monkeypatch.setattr(Period, name, refuse)
    monkeypatch.setattr(reports, "_tight", refuse)
    monkeypatch.setattr(reports, "_idle", refuse)
    verified_login(client, make_staff("boss"))
    for days in REPORT_DAYS:
        page = client.get(f"/staff/reports/overcommit/?days={days}")
        assert page.status_code == 200 and 'data-node="hn2"' in page.content.decode()


def metrics_fleet(catalogue, nodes, ves_per_node):
    """``nodes`` nodes of ``ves_per_node`` VEs, each with two sample rounds."""
    now = django_tz.now()
    made = [catalogue["node"]] + [
        Node.objects.create(name=f"m{n}", state="online", ram_bytes=8 << 30, cpus=4,
                            disk_bytes=500 << 30) for n in range(1, nodes)]
    for n, node in enumerate(made):
        ves = [make_ve(catalogue, node, 500 + n * 100 + i) for i in range(ves_per_node)]
        for age in (30, 0):
            moment = now - timedelta(seconds=age)
            NodeSample.objects.create(node=node, time=moment, cpu_busy_ns=10**9, cpus=4,
                                      ram_used=age + 1, ram_total=8 << 30, swap_used=0,
                                      disk_used=1, disk_total=2, load1=0.5)
            UsageSample.objects.bulk_create(
                UsageSample(environment=ve, time=moment, ram=age + 7, cpu_ns=10**9)
                for ve in ves)


def scrape():
    from hosting.usage.metrics import exposition
    with CaptureQueriesContext(connection) as queries:
        text = exposition()
    return len(queries.captured_queries), text


@pytest.mark.parametrize("nodes, ves_per_node", [(3, 3), (2, 5)])
def test_metrics_cost_the_same_queries_for_any_fleet(catalogue, nodes, ves_per_node):
    metrics_fleet(catalogue, 1, 3)
    small, text = scrape()
    assert text.count("hosting_ve_ram_bytes{") == 3 and "hosting_ve_ram_bytes{" in text
    assert text.count("hosting_node_ram_used_bytes{") == 1
    VE.objects.all().delete()
    Node.objects.exclude(pk=catalogue["node"].pk).delete()
    metrics_fleet(catalogue, nodes, ves_per_node)
    big, text = scrape()
    assert big == small == 4  # nodes, their latest rounds, RAM sold, VE samples
    count = nodes * ves_per_node
    # Each VE once, from its node's latest round (RAM 7, not the older round's 37).
    assert text.count("hosting_ve_ram_bytes{") == count
    assert text.count(" 7\n") >= count and " 37\n" not in text
    assert text.count("hosting_node_ram_used_bytes{") == nodes
    assert f'hosting_node_ram_sold_bytes{{node="hn1"}} {ves_per_node * 128 * MiB}' in text


def test_node_hours_are_sums_over_measured_ves_with_their_p95_before_their_first(usage):
    """The per-node hourly sums placement reads, against plain loops over the rows."""
    from hosting.usage import sampling
    series = {}
    for ve in usage["ves"] + [usage["young"]]:
        series[ve] = {row.time: (row.ram_avg or 0.0, row.cpu_avg or 0.0)
                      for row in UsageRollup.objects.filter(environment=ve)}
    figures_now = Period(30, NOW)._measure_per_ve()
    for node in usage["nodes"]:
        mine = [ve for ve in series if ve.node_id == node.pk and len(series[ve]) >= 12]
        hours = set().union(*(series[ve] for ve in mine))
        want = []
        for hour in hours:
            ram = cpu = 0
            for ve in sorted(mine, key=lambda ve: ve.pk):
                p95s = (sampling.p95([v[0] for v in series[ve].values()]),
                        sampling.p95([v[1] for v in series[ve].values()]))
                ram += series[ve].get(hour, p95s)[0]
                cpu += series[ve].get(hour, p95s)[1]
            want.append((ram, cpu))
        got = sorted(figures_now["filled"][node.pk])
        assert len(got) == len(want) == HOURS
        for sums, expected in zip(got, sorted(want)):  # VEs may come in another order
            assert sums == pytest.approx(expected, rel=1e-12)

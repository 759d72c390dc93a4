"""A node's graph read as housekeeping stored it equals the straightforward computation
(the rollups of its live VEs summed), and stays right while VEs are made, destroyed and
moved: a stored series stands in for at most one rollup run."""

from datetime import datetime, timedelta, timezone

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node
from hosting.usage import graphs, sampling, tasks
from hosting.usage.collection import RAW_FIELDS
from hosting.usage.models import NodeRollup, NodeSample, PeriodFigure, UsageRollup, UsageSample

pytestmark = pytest.mark.django_db

MiB = 1 << 20
NOW = datetime(2026, 11, 3, 0, 2, 30, tzinfo=timezone.utc)  # a run after 00:00's rollups
SAMPLE_SECONDS = settings.NODE_SAMPLE_SECONDS
RAW_ROUNDS = 125  # an hour of samples 30 s apart, and a few before it


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def make_ve(catalogue, node, veid, state="running"):
    return VE.objects.create(veid=veid, owner=catalogue["customer"], plan=catalogue["plan"],
                             node=node, template=catalogue["template"],
                             hostname=f"v{veid}.example.com", actual_state=state)


def add_usage(ve, index, hours=40, raw=True):
    """Hourly rollups over ``hours``, 5-minute ones over 30 h and (``raw``) an hour of raw
    samples: RAM whole MiB, CPU in eighths, so sums are exact in any order."""
    rows = []
    for resolution, count in ((3600, hours), (300, 30 * 12)):
        for step in range(count):
            missing = (index + step) % 13 == 0  # not measured then
            rows.append(UsageRollup(
                environment=ve, resolution=resolution, samples=10,
                time=NOW.replace(minute=0, second=0) - timedelta(seconds=resolution * (step + 1)),
                ram_avg=None if missing else float(((index * 7 + step * 3) % 23 + index) * MiB),
                cpu_avg=((index + step) % 8) / 8))
    UsageRollup.objects.bulk_create(rows)
    if raw:
        UsageSample.objects.bulk_create(
            UsageSample(environment=ve, time=NOW - timedelta(seconds=30 * back),
                        ram=((index + back) % 9 + 1) * MiB,
                        cpu_ns=(RAW_ROUNDS - back) * (index % 4 + 1) * 7_500_000_000
                        if back != 40 or index % 3 else 0)  # a reset now and then
            for back in range(RAW_ROUNDS))


def add_node_usage(node):
    rows = [NodeRollup(node=node, resolution=resolution, samples=10, ram_used_avg=float(step),
                       cpu_avg=step / 4, time=NOW.replace(minute=0, second=0)
                       - timedelta(seconds=resolution * (step + 1)))
            for resolution, count in ((3600, 50), (300, 400)) for step in range(count)]
    NodeRollup.objects.bulk_create(rows)
    NodeSample.objects.bulk_create(
        NodeSample(node=node, time=NOW - timedelta(seconds=30 * back), cpus=4,
                   cpu_busy_ns=(RAW_ROUNDS - back) * 60 * 10**9, ram_used=back * MiB,
                   ram_total=8 << 30, swap_used=0, disk_used=1, disk_total=2, load1=0.5)
        for back in range(RAW_ROUNDS))


@pytest.fixture
def fleet(catalogue):
    """Two nodes: twelve VEs on the first (more than TOP_VES: "others"), three and a
    destroyed one on the second."""
    second = Node.objects.create(name="hn2", state="online", ram_bytes=16 << 30, cpus=8,
                                 disk_bytes=500 << 30)
    nodes = [catalogue["node"], second]
    ves = [make_ve(catalogue, nodes[0] if i < 12 else second, 500 + i) for i in range(15)]
    gone = make_ve(catalogue, second, 599, state="destroyed")
    for index, ve in enumerate(ves + [gone]):
        add_usage(ve, index)
    for node in nodes:
        add_node_usage(node)
    return {"nodes": nodes, "ves": ves, "gone": gone, "catalogue": catalogue}


def straightforward(node, range_name, now=NOW):
    """The node's graph from first principles: each live VE's rows in Python."""
    span, resolution = graphs.RANGES[range_name]
    since = now - span
    series = {}
    for ve in VE.objects.filter(node=node).exclude(actual_state="destroyed").order_by("pk"):
        if resolution is None:
            samples = list(UsageSample.objects.filter(
                environment=ve, time__gte=since - timedelta(seconds=3 * SAMPLE_SECONDS))
                .order_by("time")
                .values(*RAW_FIELDS))
            values = sampling.series(samples)
            series[ve] = {s["time"].timestamp(): (ram, cpu) for s, ram, cpu in
                          zip(samples, values["ram"], values["cpu"]) if s["time"] >= since}
        else:
            series[ve] = {r.time.timestamp(): (r.ram_avg, r.cpu_avg) for r in
                          UsageRollup.objects.filter(environment=ve, resolution=resolution,
                                                     time__gte=since)}

    def mean(ve):
        known = [ram for ram, _ in series[ve].values() if ram is not None]
        return sum(known) / len(known) if known else 0
    ranked = sorted(series, key=lambda ve: -mean(ve))
    top, rest = ranked[:graphs.TOP_VES], ranked[graphs.TOP_VES:]
    others = {}
    for ve in rest:
        for moment, (ram, cpu) in series[ve].items():
            total = others.setdefault(moment, [0.0, 0.0])
            total[0] += ram or 0
            total[1] += cpu or 0
    own = graphs._node_totals(node, since, resolution)
    timeline = sorted(set(own).union(others, *(series[ve] for ve in top)))

    def column(values, index, missing=None):
        return [values.get(t, (missing, missing))[index] for t in timeline]
    shown = [{"veid": ve.veid, "hostname": ve.hostname, "ram": column(series[ve], 0),
              "cpu": column(series[ve], 1)} for ve in top]
    if rest:
        shown.append({"veid": None, "hostname": f"{len(rest)} others",
                      "ram": column(others, 0, 0), "cpu": column(others, 1, 0)})
    return {"range": range_name, "resolution": resolution or 0, "start": since.timestamp(),
            "end": now.timestamp(), "time": timeline, "ves": shown,
            "node": {"ram": column(own, 0), "cpu": column(own, 1)},
            "capacity": {"ram": node.ram_bytes, "cpus": node.cpus}}


def refuse_computing(monkeypatch):
    def refuse(node, ves, since, resolution):
        if resolution is not None:
            raise AssertionError("a range of rollups computed in the request")
        return computing(node, ves, since, resolution)
    computing = graphs._node_series
    monkeypatch.setattr(graphs, "_node_series", refuse)


def assert_graphs_right(nodes, monkeypatch, now=NOW):
    """Each node's graph of each range, as read, is the straightforward one; the stored
    ranges' reads compute nothing."""
    wanted = {}
    for node in nodes:
        for range_name in graphs.RANGES:
            wanted[node, range_name] = straightforward(node, range_name, now)
            assert graphs.compute_node_usage(node, range_name, now=now) == \
                wanted[node, range_name]
    with monkeypatch.context() as patched:
        refuse_computing(patched)
        for (node, range_name), want in wanted.items():
            assert graphs.node_usage(node, range_name, now=now) == want, (node, range_name)


def test_the_stored_node_graph_is_the_straightforward_one(fleet, monkeypatch):
    assert tasks.after_rollups(now=NOW) >= 0  # each rollup run stores the node series
    stored = PeriodFigure.objects.filter(name__startswith="node-graph:")
    assert stored.count() == len(fleet["nodes"]) * len(graphs.STORED)
    assert_graphs_right(fleet["nodes"], monkeypatch)
    answer = graphs.node_usage(fleet["nodes"][0], "30d", now=NOW)
    assert len(answer["ves"]) == graphs.TOP_VES + 1 and answer["ves"][-1]["hostname"] == \
        "4 others"
    assert fleet["gone"].veid not in [v["veid"] for v in
                                      graphs.node_usage(fleet["nodes"][1], "24h", now=NOW)["ves"]]


def test_a_stored_graph_is_read_in_a_few_queries_without_rollup_rows(fleet):
    graphs.store_node_usage(NOW)
    for range_name in graphs.STORED:
        with CaptureQueriesContext(connection) as queries:
            graphs.node_usage(fleet["nodes"][0], range_name, now=NOW)
        read = [q["sql"] for q in queries.captured_queries]
        # the VEs, the newest rollups (VEs', the node's) and the stored row
        assert len(read) == 4 and not any("ram_avg" in sql for sql in read), read


def test_made_destroyed_and_moved_ves_stand_in_for_one_run_then_are_right(fleet,
                                                                           monkeypatch):
    nodes, ves = fleet["nodes"], fleet["ves"]
    graphs.store_node_usage(NOW)
    before = {(node.pk, r): graphs.node_usage(node, r, now=NOW)
              for node in nodes for r in graphs.STORED}
    biggest = graphs.node_usage(nodes[0], "30d", now=NOW)["ves"][0]["veid"]
    VE.objects.filter(veid=biggest).update(actual_state="destroyed")
    VE.objects.filter(pk=ves[3].pk).update(node=nodes[1])  # moved with its history
    new = make_ve(fleet["catalogue"], nodes[0], 700)
    add_usage(new, 40, hours=3, raw=False)
    # Until the next rollup run, what the last one stored stands in: nothing is computed.
    with monkeypatch.context() as patched:
        refuse_computing(patched)
        for (node_pk, range_name), answer in before.items():
            node = Node.objects.get(pk=node_pk)
            assert graphs.node_usage(node, range_name, now=NOW) == answer
    graphs.store_node_usage(NOW)  # the next run
    assert_graphs_right(nodes, monkeypatch)
    moved = graphs.node_usage(nodes[1], "30d", now=NOW)["ves"]
    assert ves[3].veid in [v["veid"] for v in moved]
    assert biggest not in [v["veid"] for v in graphs.node_usage(nodes[0], "30d", now=NOW)["ves"]]


def test_a_new_rollup_or_the_range_moving_on_is_new_data(fleet, monkeypatch):
    node = fleet["nodes"][0]
    graphs.store_node_usage(NOW)
    assert graphs.store_node_usage(NOW) == 0  # all current: nothing computed
    # Five minutes on, before the run that rolls the last period up: the older series
    # stands in, its point before the range dropped.
    later = NOW + timedelta(minutes=5)
    stood = graphs.node_usage(node, "24h", now=later)
    stored = graphs.node_usage(node, "24h", now=NOW)
    assert stood["time"] == stored["time"][1:] and stood["time"][0] >= later.timestamp() - 86400
    assert stood["ves"][0]["ram"] == stored["ves"][0]["ram"][1:]
    assert (stood["start"], stood["end"]) == (later.timestamp() - 86400, later.timestamp())
    UsageRollup.objects.create(environment=fleet["ves"][0], resolution=300, samples=10,
                               time=NOW.replace(minute=0, second=0), ram_avg=float(MiB),
                               cpu_avg=0.5)
    assert graphs.store_node_usage(later) == len(fleet["nodes"]) * 2  # both 5-minute ranges
    assert_graphs_right(fleet["nodes"], monkeypatch, now=later)


def test_a_series_older_than_a_run_is_not_a_stand_in(fleet):
    node = fleet["nodes"][0]
    graphs.store_node_usage(NOW)
    VE.objects.filter(pk=fleet["ves"][0].pk).update(actual_state="destroyed")
    PeriodFigure.objects.update(computed_at=NOW - graphs.STAND_IN - timedelta(minutes=1))
    # Housekeeping is behind: the request computes the graph itself (and stores it).
    assert graphs.node_usage(node, "7d", now=NOW) == straightforward(node, "7d")
    assert PeriodFigure.objects.filter(name=f"node-graph:{node.pk}:{graphs.TOP_VES}",
                                       days=7).count() == 1


def test_the_last_hour_is_computed_from_raw_samples_as_before(fleet):
    """Raw samples arrive every 30 s: the last hour is never stored, only read faster."""
    node = fleet["nodes"][0]
    answer = graphs.node_usage(node, "1h", now=NOW)
    assert answer == straightforward(node, "1h")
    shown = answer["ves"][:-1]  # the others sum to 0 where none has a rate
    assert any(None in v["cpu"] for v in shown) and all(any(v["cpu"]) for v in shown)

"""The usage API behind the graphs: series per range, from raw samples or rollups."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosting.usage.models import UsageRollup, UsageSample

from .helpers import counts, fill

pytestmark = pytest.mark.django_db


def test_the_last_hour_comes_from_raw_samples_as_rates(api_as, world):
    ve, now = world["ve_b"], timezone.now()
    for i, (ram, cpu) in enumerate([(100, 0), (200, 30), (300, 45)]):
        UsageSample.objects.create(environment=ve, time=now - timedelta(seconds=90 - 30 * i),
                                   ram=ram << 20, cpu_ns=cpu * 10**9, processes=4 + i,
                                   memory_failcnt=i)
    UsageSample.objects.create(environment=world["ve_a"], time=now, ram=1)  # not B's
    data = api_as("b").get(fill("/api/v1/environments/{ve_b}/usage/?range=1h", world)).json()
    assert (data["range"], data["resolution"]) == ("1h", 0)
    assert len(data["time"]) == 3
    assert data["ram"] == [100 << 20, 200 << 20, 300 << 20]
    assert data["cpu"] == [None, 1.0, 0.5]  # CPUs busy over each 30 s
    assert data["limit_hits"] == [0, 1, 1]
    assert data["limits"]["ram"] == world["plan"].ram_mb << 20
    assert data["limits"]["disk"] == world["plan"].disk_gib << 30


def test_longer_ranges_come_from_rollups_with_peaks(api_as, world):
    ve, now = world["ve_b"], timezone.now()
    for hours in (1, 2, 40):
        UsageRollup.objects.create(environment=ve, resolution=300, samples=10,
                                   time=now - timedelta(hours=hours), ram_avg=5, ram_max=9,
                                   cpu_avg=0.25, cpu_max=1, limit_hits=2, oom_kills=1)
    data = api_as("staff").get(fill("/api/v1/environments/{ve_b}/usage/?range=24h",
                                    world)).json()
    # The 40 h old one is out; the hour between the two is a gap (None), not a line.
    assert data["resolution"] == 300 and len(data["time"]) == 3
    assert data["ram"] == [5, None, 5] and data["ram_max"] == [9, None, 9]
    assert data["cpu_max"] == [1, None, 1] and data["limit_hits"] == [3, None, 3]
    week = api_as("staff").get(fill("/api/v1/environments/{ve_b}/usage/?range=7d",
                                    world)).json()
    assert [v for v in week["ram"] if v is not None] == [5, 5, 5]


def test_a_bad_range_is_a_clear_400_and_writes_nothing(api_as, world):
    before = counts()
    response = api_as("b").get(fill("/api/v1/environments/{ve_b}/usage/?range=1y", world))
    assert response.status_code == 400 and "range must be one of" in response.content.decode()
    assert counts() == before


def test_the_vps_page_carries_the_graphs(page_as, world):
    page = page_as("b").get(fill("/vps/{ve_b}/", world)).content.decode()
    assert 'id="usage"' in page and "vendor/uplot/uPlot.iife.min.js" in page
    assert fill('data-url="/api/v1/environments/{ve_b}/usage/"', world) in page
    assert 'data-limits=""' in page  # customers: no limit lines
    staff = page_as("staff").get(fill("/vps/{ve_b}/", world)).content.decode()
    assert 'data-limits="yes"' in staff


def test_a_nodes_ves_stack_up_against_its_capacity(api_as, world, monkeypatch):
    from hosting.usage import graphs
    now = timezone.now()
    for ve, ram in ((world["ve_a"], 100), (world["ve_b"], 300)):
        for hours in (1, 2):
            UsageRollup.objects.create(environment=ve, resolution=300, samples=10,
                                       time=now.replace(microsecond=0) - timedelta(hours=hours),
                                       ram_avg=ram + hours, cpu_avg=0.5)
    url = fill("/api/v1/nodes/{node}/usage/?range=24h", world)
    data = api_as("staff").get(url).json()
    assert len(data["time"]) == 2
    assert [v["veid"] for v in data["ves"]] == [102, 101]  # biggest first
    assert data["ves"][0]["ram"] == [302, 301] and data["ves"][1]["cpu"] == [0.5, 0.5]
    assert data["capacity"] == {"ram": world["node"].ram_bytes, "cpus": world["node"].cpus}
    assert data["node"] == {"ram": [None, None], "cpu": [None, None]}  # no node rollups yet
    monkeypatch.setattr(graphs, "TOP_VES", 1)  # the rest are summed
    data = api_as("staff").get(url).json()
    assert [v["hostname"] for v in data["ves"]] == ["web-b.example.com", "1 others"]
    assert data["ves"][1]["ram"] == [102, 101]
    assert api_as("staff").get(fill("/api/v1/nodes/{node}/usage/?range=x", world)) \
        .status_code == 400


def test_the_node_graph_carries_the_nodes_own_totals(api_as, world):
    from hosting.usage.models import NodeRollup, NodeSample
    node, now = world["node"], timezone.now().replace(microsecond=0)
    hour = now - timedelta(hours=2)
    NodeRollup.objects.create(node=node, resolution=300, time=hour, samples=10,
                              ram_used_avg=3 << 30, cpu_avg=1.5)
    UsageRollup.objects.create(environment=world["ve_b"], resolution=300, samples=10,
                               time=hour, ram_avg=1 << 30, cpu_avg=0.5)
    data = api_as("staff").get(fill("/api/v1/nodes/{node}/usage/?range=24h", world)).json()
    assert data["node"] == {"ram": [3 << 30], "cpu": [1.5]}
    # The last hour comes from raw samples: CPU as a rate between two readings.
    for age, busy in ((60, 10 * 10**9), (30, 40 * 10**9)):
        NodeSample.objects.create(node=node, time=now - timedelta(seconds=age),
                                  cpu_busy_ns=busy, cpus=4, ram_used=age, ram_total=8 << 30,
                                  swap_used=0, disk_used=1, disk_total=2, load1=0.1)
        UsageSample.objects.create(environment=world["ve_b"], time=now - timedelta(seconds=age),
                                   ram=age << 20, cpu_ns=busy // 4)
    UsageSample.objects.create(environment=world["ve_a"], time=now - timedelta(hours=2),
                               ram=1, cpu_ns=0)  # before the hour: not drawn
    data = api_as("staff").get(fill("/api/v1/nodes/{node}/usage/?range=1h", world)).json()
    assert data["node"] == {"ram": [60, 30], "cpu": [None, 1.0]}
    assert [(v["veid"], v["ram"], v["cpu"]) for v in data["ves"]] == [
        (world["ve_b"].veid, [60 << 20, 30 << 20], [None, 0.25]),
        (world["ve_a"].veid, [None, None], [None, None])]


def test_prometheus_metrics_show_the_latest_sample_round(api_as, world):
    from rest_framework.test import APIClient

    from hosting.usage.models import NodeSample
    now = timezone.now()
    node = world["node"]
    for age, ram in ((60, 1), (0, 64 << 20)):  # an older round, then the latest
        moment = now - timedelta(seconds=age)
        NodeSample.objects.create(node=node, time=moment, cpu_busy_ns=5 * 10**9, cpus=4,
                                  ram_used=ram, ram_total=8 << 30, swap_used=0,
                                  disk_used=1, disk_total=2, load1=0.25)
        UsageSample.objects.create(environment=world["ve_b"], time=moment, ram=ram,
                                   cpu_ns=3 * 10**9, oom_kills=2)
    response = api_as("staff").get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    labels = f'veid="{world["ve_b"].veid}",hostname="web-b.example.com",node="{node.name}"'
    assert f'hosting_ve_ram_bytes{{{labels},plan="{world["plan"].name}"}} {64 << 20}' in text
    assert f"hosting_ve_cpu_seconds_total{{{labels}" in text and " 3.0" in text
    assert f'hosting_node_ram_used_bytes{{node="{node.name}"}} {64 << 20}' in text
    assert "# TYPE hosting_ve_oom_kills_total counter" in text
    assert "hosting_ve_ram_bytes" in text and text.count("hosting_ve_ram_bytes{") == 1
    # A Prometheus scraper uses a staff token; customers and strangers get nothing.
    from hosting.core import tokens
    _, key = tokens.issue(world["staff"])
    scraper = APIClient()
    scraper.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert scraper.get("/metrics").status_code == 200
    assert api_as("b").get("/metrics").status_code == 403
    assert APIClient().get("/metrics").status_code == 401


def test_a_gap_in_the_samples_is_shown_as_a_gap(api_as, world):
    ve, now = world["ve_b"], timezone.now()
    for hours in (1, 4):  # nothing in between: the node was down
        UsageRollup.objects.create(environment=ve, resolution=300, samples=10,
                                   time=now - timedelta(hours=hours), ram_avg=5)
    data = api_as("b").get(fill("/api/v1/environments/{ve_b}/usage/?range=24h", world)).json()
    assert data["ram"] == [5, None, 5] and len(data["time"]) == 3

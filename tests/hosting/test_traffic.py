"""Monthly traffic: counting from the engine's counters, quotas, throttling and lifting."""

import subprocess
from datetime import datetime, timezone

import pytest

from hosting.environments import services
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor, runners
from hosting.operations.models import Operation
from hosting.usage import tasks, traffic
from hosting.usage.models import TrafficMonth
from tests.staffing import make_staff, verified_login

pytestmark = pytest.mark.django_db
GIB = 1 << 30
NOV, DEC = datetime(2026, 11, 20, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc)


@pytest.fixture
def ve(catalogue):
    catalogue["plan"].bandwidth_gib = 1
    catalogue["plan"].throttled_speed_mbit = 2
    catalogue["plan"].save()
    op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                        "traffic.example.com", catalogue["user"], root_password="root-pass-123")
    Operation.objects.filter(pk=op.pk).update(state="succeeded")
    VE.objects.filter(pk=op.environment_id).update(actual_state="running")
    return VE.objects.get(pk=op.environment_id)


def totals(rx, tx):
    return {"rx_bytes": rx, "tx_bytes": tx, "rx_packets": 0, "tx_packets": 0}


def finish_operations(ve):
    Operation.objects.filter(environment=ve, state="queued").update(state="succeeded")


def test_readings_add_up_per_month_and_survive_a_counter_reset(ve):
    traffic.record(ve, totals(100, 50), NOV)
    traffic.record(ve, totals(300, 80), NOV)
    traffic.record(ve, totals(40, 10), NOV)  # reinstalled: counting starts again from here
    nov = TrafficMonth.objects.get(environment=ve, month="2026-11-01")
    assert (nov.rx_bytes, nov.tx_bytes) == (300, 80)  # never the whole new total again
    traffic.record(ve, totals(140, 30), DEC)  # a new month counts on from the last reading
    dec = TrafficMonth.objects.get(environment=ve, month="2026-12-01")
    assert (dec.rx_bytes, dec.tx_bytes) == (100, 20)


def test_a_reading_the_node_could_not_make_counts_nothing_and_loses_nothing(ve):
    """Unknown totals (the engine could not reach the VE's host side) are skipped;
    the next real reading counts everything since the last one."""
    traffic.record(ve, totals(100, 50), NOV)
    assert traffic.record(ve, totals(None, None), NOV) is None
    traffic.record(ve, totals(250, 90), NOV)
    nov = TrafficMonth.objects.get(environment=ve, month="2026-11-01")
    assert (nov.rx_bytes, nov.tx_bytes, nov.last_rx_total) == (250, 90, 250)


def test_over_quota_throttles_and_the_next_month_lifts_it(ve, django_capture_on_commit_callbacks):
    traffic.record(ve, totals(GIB // 2, GIB // 4), NOV)
    assert traffic.enforce(ve, NOV) is None  # 0.75 of 1 GiB
    traffic.record(ve, totals(GIB, GIB // 4), NOV)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        op = traffic.enforce(ve, NOV)
    ve.refresh_from_db()
    assert op.kind == "set" and ve.throttled and len(sent) == 1
    assert runners.config_of(ve).limits.rate == 2  # the plan's reduced speed
    finish_operations(ve)
    assert traffic.enforce(ve, NOV) is None  # already throttled
    op = traffic.enforce(ve, DEC)
    ve.refresh_from_db()
    assert op.kind == "set" and not ve.throttled
    assert runners.config_of(ve).limits.rate == ve.plan.port_speed_mbit


def test_staff_extra_traffic_lifts_the_throttle(ve, catalogue):
    traffic.record(ve, totals(2 * GIB, 0))
    traffic.enforce(ve)
    finish_operations(ve)
    staff = make_staff("staff")
    ve = services.add_traffic(VE.objects.get(pk=ve.pk), staff, 2)
    assert not ve.throttled
    assert ve.operations.filter(kind="set", state="queued").exists()
    assert traffic.quota_bytes(ve) == 3 * GIB


def test_a_suspend_plan_suspends_and_resumes(ve):
    ve.plan.over_quota = "suspend"
    ve.plan.save()
    traffic.record(ve, totals(2 * GIB, 0), NOV)
    op = traffic.enforce(ve, NOV)
    ve.refresh_from_db()
    assert op.kind == "suspend" and ve.suspended_for_traffic and ve.desired_state == "suspended"
    finish_operations(ve)
    VE.objects.filter(pk=ve.pk).update(actual_state="suspended")
    op = traffic.enforce(ve, DEC)
    ve.refresh_from_db()
    assert op.kind == "resume" and not ve.suspended_for_traffic and ve.desired_state == "running"


def test_a_busy_ve_is_left_for_the_next_reading(ve):
    Operation.objects.create(environment=ve, kind="restart")
    traffic.record(ve, totals(2 * GIB, 0))
    assert traffic.enforce(ve) is None
    assert not VE.objects.get(pk=ve.pk).throttled


def test_the_node_collects_real_counters(catalogue, engine, node_run_dir):
    # Runs in the test run's own network namespace (tests/conftest.py).
    subprocess.run(["ip", "addr", "add", "198.18.5.1/32", "dev", "lo"], check=False)
    op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                        "counted.example.com", catalogue["user"], root_password="root-pass-123")
    executor.execute(op.pk, engine)
    veid = op.environment.veid
    assert engine.exec(veid, ["ping", "-c", "20", "-i", "0.05", "-s", "1000",
                              "198.18.5.1"]).returncode == 0
    assert tasks.collect("hn1", engine) == 1
    month = traffic.current(op.environment)
    assert month.tx_bytes >= 20 * 1000 and month.rx_bytes >= 20 * 1000
    engine.destroy(veid)


def test_customer_and_staff_are_told(ve, catalogue, client):
    from rest_framework.test import APIClient
    traffic.record(ve, totals(GIB, GIB))
    traffic.enforce(ve)
    api = APIClient()
    api.force_authenticate(catalogue["user"])
    shown = api.get(f"/api/v1/environments/{ve.veid}/").json()["traffic"]
    assert shown["used_bytes"] == 2 * GIB and shown["quota_bytes"] == GIB and shown["throttled"]
    client.force_login(catalogue["user"])
    page = client.get(f"/vps/{ve.veid}/").content.decode()
    assert "The monthly traffic is used up" in page and "2.0 GiB" in page
    staff = make_staff("staff2")
    verified_login(client, staff)
    assert "throttled" in client.get("/staff/vps/").content.decode()
    from hosting.core.models import AuditLog
    assert AuditLog.objects.filter(action="ve.traffic_exceeded", object_id=str(ve.veid)).exists()

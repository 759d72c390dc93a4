"""VPSes that stop by themselves: power-off and reboot from inside reach the history and
the desired state; a crashed VPS comes back with back-off and a crash loop stops;
a rebooted node starts its VPSes in a documented order."""

import os
import signal
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from hosting.customers.models import Customer
from hosting.environments import services
from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node
from hosting.operations import executor, node_events, reconcile, restarts
from hosting.operations import services as operations
from hosting.operations.models import Operation
from tests.engine.conftest import wait_for
from tests.engine.test_watcher import WatcherProcess
from ve.kernel import proc

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(catalogue, engine, node_run_dir):
    """A VPS made by the dashboard and running, on a node that has not rebooted since."""
    op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                        "self.example.com", catalogue["user"], root_password="root-pass-123")
    executor.execute(op.pk, engine)
    Node.objects.filter(name="hn1").update(boot_id=proc.boot_id())
    return VE.objects.get(pk=op.environment_id)


def reconcile_now(engine, capture):
    with capture(execute=False):
        return reconcile.node("hn1", engine)


def run_queued(ve, engine):
    for op in Operation.objects.filter(environment=ve, state="queued"):
        executor.execute(op.pk, engine)


def crash(engine, ve):
    os.kill(engine.status(ve.veid).init_pid, signal.SIGKILL)
    assert wait_for(lambda: engine.status(ve.veid).state == "stopped")


def test_a_crashed_vps_comes_back_with_back_off_and_a_crash_loop_stops(
        running, engine, django_capture_on_commit_callbacks):
    ve = running
    for attempt in range(1, restarts.MAX_RESTARTS + 1):
        crash(engine, ve)
        summary = reconcile_now(engine, django_capture_on_commit_callbacks)
        if attempt > 1:  # the back-off holds it: nothing now, a note for staff
            assert summary["queued"] == [], attempt
            assert "started again after a pause" in " ".join(summary["drift"])
            pause = restarts.BACKOFF * 2 ** (attempt - 2)
            VE.objects.filter(pk=ve.pk).update(last_restart=timezone.now() - pause)
            summary = reconcile_now(engine, django_capture_on_commit_callbacks)
        assert summary["queued"] == [[ve.veid, "start"]], attempt
        run_queued(ve, engine)
        assert engine.status(ve.veid).state == "running"
        assert VE.objects.get(pk=ve.pk).restarts == attempt
    crash(engine, ve)
    VE.objects.filter(pk=ve.pk).update(last_restart=timezone.now() - timedelta(minutes=10))
    summary = reconcile_now(engine, django_capture_on_commit_callbacks)
    assert summary["queued"] == []
    assert f"VE {ve.veid} (self.example.com) is in a crash loop" in " ".join(summary["drift"])
    ve.refresh_from_db()
    assert ve.crash_loop and ve.actual_state == "stopped" and ve.desired_state == "running"
    # It stays so on the next rounds, until its owner starts it on purpose.
    assert reconcile_now(engine, django_capture_on_commit_callbacks)["queued"] == []
    with django_capture_on_commit_callbacks(execute=False):
        op = operations.request(ve, Operation.Kind.START, running.owner.user)
    ve.refresh_from_db()
    assert not ve.crash_loop and ve.restarts == 0
    executor.execute(op.pk, engine)
    assert engine.status(ve.veid).state == "running"


def test_a_long_healthy_run_forgives_earlier_restarts(running, engine,
                                                      django_capture_on_commit_callbacks):
    VE.objects.filter(pk=running.pk).update(
        restarts=restarts.MAX_RESTARTS, last_restart=timezone.now() - restarts.WINDOW * 2)
    crash(engine, running)
    assert reconcile_now(engine, django_capture_on_commit_callbacks)["queued"] == \
        [[running.veid, "start"]]
    assert VE.objects.get(pk=running.pk).restarts == 1


def test_after_a_node_reboot_vpses_start_one_customer_at_a_time(catalogue):
    """The boot order interleaves customers, so a customer with many VPSes (low VEIDs
    or not) cannot delay everyone else's first one."""
    big = catalogue["customer"]
    small_user = User.objects.create_user("bob", password="bob-pass-12")
    small = Customer.objects.create(user=small_user, company="Bob")
    ves = []
    for veid, owner in ((101, big), (102, big), (103, big), (104, small), (105, big)):
        ves.append(VE(veid=veid, owner=owner))
    order = [ve.veid for ve in restarts.boot_order(ves)]
    assert order == [101, 104, 102, 103, 105]


def test_a_rebooted_node_starts_what_should_run_without_counting_restarts(
        running, engine, django_capture_on_commit_callbacks):
    engine.stop(running.veid, fast=True)  # as after a power cut: nothing runs
    Node.objects.filter(name="hn1").update(boot_id="an-earlier-boot")
    summary = reconcile_now(engine, django_capture_on_commit_callbacks)
    assert summary["booting"] and summary["queued"] == [[running.veid, "start"]]
    assert VE.objects.get(pk=running.pk).restarts == 0
    assert Node.objects.get(name="hn1").boot_id == proc.boot_id()
    run_queued(running, engine)
    assert engine.status(running.veid).state == "running"


@pytest.fixture
def watched(running, engine, monkeypatch):
    """The VPS restarted under a node watcher (so its reboots and power-offs are seen)."""
    monkeypatch.setenv("VE_WATCH", "on")
    watcher = WatcherProcess(engine)
    engine.restart(running.veid, timeout=5)
    yield running
    watcher.stop()


def test_poweroff_inside_stays_off_and_the_dashboard_agrees(
        watched, engine, django_capture_on_commit_callbacks):
    ve = watched
    engine.exec(ve.veid, ["poweroff"])
    assert wait_for(lambda: engine.events(), 15)
    assert node_events.consume("hn1", engine) == 0  # nothing to restart
    ve.refresh_from_db()
    assert (ve.actual_state, ve.desired_state) == ("stopped", "stopped")
    op = ve.operations.get(kind="poweroff")
    assert (op.state, op.message) == ("succeeded", "powered off from inside")
    assert op.requester_shown_to(ve.owner.user) == "the VPS itself"
    from hosting.operations.api import OperationSerializer
    assert OperationSerializer().get_origin(op) == "inside"
    assert engine.events() == []  # recorded, then forgotten on the node
    summary = reconcile_now(engine, django_capture_on_commit_callbacks)
    assert summary["queued"] == [] and summary["drift"] == []
    assert engine.status(ve.veid).state == "stopped"


def test_reboot_inside_is_in_the_history_and_the_vps_runs(watched, engine):
    ve = watched
    old = engine.status(ve.veid).init_pid
    engine.exec(ve.veid, ["reboot"])
    assert wait_for(lambda: engine.events(), 15)
    node_events.consume("hn1", engine)
    node_events.consume("hn1", engine)  # twice: recorded once
    ve.refresh_from_db()
    assert ve.actual_state == "running" and ve.desired_state == "running"
    (op,) = ve.operations.filter(kind="restart", params__origin="inside")
    assert op.message == "rebooted from inside"
    assert engine.status(ve.veid).init_pid != old

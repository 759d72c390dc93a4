"""Hibernation for customers (OpenVZ's suspend to disk), where the plan includes it: the
"hibernate" operation saves the VPS's memory and stops it; Start resumes it with its
processes. On a real engine in-process (tests/engine fixtures), like the plan tests."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from hosting.core.errors import Conflict, Forbidden
from hosting.environments import services
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor, reconcile, services as operations
from hosting.operations.models import Operation
from tests.engine.test_checkpoint import COUNTER, count, processes
from tests.engine.conftest import wait_for
from tests.staffing import make_staff

Kind = Operation.Kind


def _run(op, engine):
    executor.execute(op.pk, engine)
    return Operation.objects.get(pk=op.pk)


@pytest.fixture
def running(catalogue, node_run_dir, engine, django_capture_on_commit_callbacks, settings):
    """A running VPS of plan S (hibernation not included) on the real engine."""
    settings.NODE_NAME = catalogue["node"].name
    with django_capture_on_commit_callbacks(execute=False):
        op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                            "sleepy.example.com", catalogue["user"], root_password="root-pass-1")
    assert _run(op, engine).state == "succeeded"
    return VE.objects.get(pk=op.environment_id)


def _hibernate(ve, user, capture):
    with capture(execute=False):
        return operations.request(ve, Kind.HIBERNATE, user)


@pytest.mark.django_db
def test_a_customer_hibernates_only_where_the_plan_includes_it(
        running, catalogue, django_capture_on_commit_callbacks):
    user, plan = catalogue["user"], catalogue["plan"]
    with pytest.raises(Forbidden, match="does not include hibernation"):
        _hibernate(running, user, django_capture_on_commit_callbacks)
    api = APIClient()
    api.force_authenticate(user)
    assert api.post(f"/api/v1/environments/{running.veid}/hibernate/").status_code == 403
    page = Client()
    page.force_login(user)
    assert 'id="btn-hibernate"' not in page.get(f"/vps/{running.veid}/").content.decode()
    plan.hibernation = True
    plan.save()
    assert 'id="btn-hibernate"' in page.get(f"/vps/{running.veid}/").content.decode()
    answer = api.post(f"/api/v1/environments/{running.veid}/hibernate/")
    assert answer.status_code == 202 and answer.json()["kind"] == "hibernate"
    running.refresh_from_db()
    assert running.desired_state == "hibernated"


@pytest.mark.django_db
def test_hibernated_its_memory_is_on_disk_and_start_resumes_its_processes(
        running, catalogue, engine, django_capture_on_commit_callbacks):
    engine.exec(running.veid, ["sh", "-c", COUNTER])
    assert wait_for(lambda: count(engine, running.veid) > 3, 5)
    before = processes(engine, running.veid)
    staff = make_staff("root-admin")  # staff may hibernate any VPS
    op = _run(_hibernate(running, staff, django_capture_on_commit_callbacks), engine)
    assert op.state == "succeeded", op.error
    running.refresh_from_db()
    assert running.actual_state == "hibernated" and engine.hibernated(running.veid)
    assert engine.status(running.veid).state == "stopped"
    with pytest.raises(Conflict, match="hibernated"):  # reboot would lose the saved state
        operations.request(running, Kind.RESTART, catalogue["user"])
    with django_capture_on_commit_callbacks(execute=False):
        summary = reconcile.node(catalogue["node"].name, engine)
    assert summary["queued"] == [] and summary["drift"] == []  # not a VPS that stopped
    running.refresh_from_db()
    assert running.actual_state == "hibernated"
    with django_capture_on_commit_callbacks(execute=False):
        op = operations.request(running, Kind.START, catalogue["user"])
    assert _run(op, engine).state == "succeeded"
    running.refresh_from_db()
    assert running.actual_state == "running" and not engine.hibernated(running.veid)
    assert processes(engine, running.veid) == before
    counted = count(engine, running.veid)
    assert wait_for(lambda: count(engine, running.veid) > counted, 5)

"""Snapshots for customers: take, list, roll back to and delete disk snapshots of a VPS
through the API and the portal, held to the plan's count and space; on a real engine
in-process (tests/engine fixtures), like the hibernation tests."""

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from hosting.customers.models import Customer
from hosting.environments import services
from hosting.environments.models import Snapshot, VirtualEnvironment as VE
from hosting.operations import executor
from hosting.operations.models import Operation
from tests.staffing import make_staff

PASSWORD = "alice-pass-1"  # the catalogue's customer's


def _run_queued(ve, engine):
    """Run the VPS's queued operation on the engine; return it, finished."""
    op = ve.operations.get(state="queued")
    executor.execute(op.pk, engine)
    return Operation.objects.get(pk=op.pk)


@pytest.fixture
def running(catalogue, node_run_dir, engine, django_capture_on_commit_callbacks, settings):
    """A running VPS of plan S, which keeps two snapshots of 1 GiB."""
    settings.NODE_NAME = catalogue["node"].name
    plan = catalogue["plan"]
    plan.snapshots, plan.snapshot_gib = 2, 1
    plan.save()
    with django_capture_on_commit_callbacks(execute=False):
        services.order(catalogue["customer"], plan, catalogue["template"],
                       "snappy.example.com", catalogue["user"], root_password="root-pass-1")
    ve = VE.objects.get(hostname="snappy.example.com")
    assert _run_queued(ve, engine).state == "succeeded"
    return VE.objects.get(pk=ve.pk)


def _api(user):
    api = APIClient()
    api.force_authenticate(user)
    return api


def _sh(engine, ve, script):
    out = engine.exec(ve.veid, ["sh", "-c", script])
    assert out.returncode == 0, out.stdout
    return out.stdout.decode()


@pytest.mark.django_db
def test_a_customer_takes_rolls_back_and_deletes_snapshots(
        running, catalogue, engine, django_capture_on_commit_callbacks):
    api, url = _api(catalogue["user"]), f"/api/v1/environments/{running.veid}"
    _sh(engine, running, "echo kept > /root/A")
    with django_capture_on_commit_callbacks(execute=False):
        answer = api.post(f"{url}/snapshot/", {"name": "before-upgrade"})
    assert answer.status_code == 202 and answer.json()["kind"] == "snapshot", answer.json()
    assert _run_queued(running, engine).state == "succeeded"
    listed = api.get(f"{url}/snapshots/").json()
    assert [s["name"] for s in listed["snapshots"]] == ["before-upgrade"]
    assert listed["count"] == 1 and listed["allowed"] == 2 and listed["limit_bytes"] == 1 << 30
    assert [s["name"] for s in engine.snapshots(running.veid)] == ["before-upgrade"]

    _sh(engine, running, "rm /root/A; echo new > /root/B")
    # A rollback erases what changed since: customers confirm with their password.
    assert api.post(f"{url}/rollback/", {"name": "before-upgrade"}).status_code == 403
    assert api.post(f"{url}/rollback/", {"name": "nope", "current_password": PASSWORD}) \
        .status_code == 400
    with django_capture_on_commit_callbacks(execute=False):
        answer = api.post(f"{url}/rollback/", {"name": "before-upgrade",
                                               "current_password": PASSWORD})
    assert answer.status_code == 202, answer.json()
    assert _run_queued(running, engine).state == "succeeded"
    running.refresh_from_db()
    assert running.actual_state == "running"
    assert _sh(engine, running, "ls /root").split() == ["A"]

    with django_capture_on_commit_callbacks(execute=False):
        answer = api.post(f"{url}/delete-snapshot/", {"name": "before-upgrade"})
    assert answer.status_code == 202
    assert _run_queued(running, engine).state == "succeeded"
    assert api.get(f"{url}/snapshots/").json()["snapshots"] == []
    assert engine.snapshots(running.veid) == []


@pytest.mark.django_db
def test_the_plan_decides_how_many_and_staff_are_not_held_to_it(
        running, catalogue, engine, django_capture_on_commit_callbacks):
    api, url = _api(catalogue["user"]), f"/api/v1/environments/{running.veid}"
    for name in ("one", "two"):
        with django_capture_on_commit_callbacks(execute=False):
            assert api.post(f"{url}/snapshot/", {"name": name}).status_code == 202
        assert _run_queued(running, engine).state == "succeeded"
    third = api.post(f"{url}/snapshot/", {"name": "three"})
    assert third.status_code == 409 and "keeps 2 snapshot" in third.json()["detail"]
    assert api.post(f"{url}/snapshot/", {"name": "../x"}).status_code == 400
    assert api.post(f"{url}/snapshot/", {"name": "one"}).status_code == 409
    staff = make_staff("root-admin")
    with django_capture_on_commit_callbacks(execute=False):
        assert _api(staff).post(f"{url}/snapshot/", {"name": "support"}).status_code == 202
    assert _run_queued(running, engine).state == "succeeded"
    assert running.snapshots.count() == 3 and not running.operations.filter(
        state="queued").exists()

    plan = catalogue["plan"]
    plan.snapshots = 0
    plan.save()
    refused = api.post(f"{url}/snapshot/", {})
    assert refused.status_code == 403 and "does not include snapshots" in refused.json()["detail"]
    page = Client()
    page.force_login(catalogue["user"])
    assert 'id="snapshots"' not in page.get(f"/vps/{running.veid}/").content.decode()


@pytest.mark.django_db
def test_the_space_snapshots_hold_is_limited(running, catalogue):
    Snapshot.objects.create(environment=running, name="big", created="2026-12-01T00:00Z",
                            method="reflink", own_bytes=1 << 30)
    answer = _api(catalogue["user"]).post(f"/api/v1/environments/{running.veid}/snapshot/", {})
    assert answer.status_code == 409 and "1.0 GiB of 1 GiB" in answer.json()["detail"]
    assert not running.operations.filter(kind="snapshot").exists()


@pytest.mark.django_db
def test_another_customer_neither_sees_nor_touches_the_snapshots(running, catalogue):
    Snapshot.objects.create(environment=running, name="mine", created="2026-12-01T00:00Z",
                            method="reflink", own_bytes=0)
    mallory = User.objects.create_user("mallory", password="mallory-pass-1")
    Customer.objects.create(user=mallory)
    api, url = _api(mallory), f"/api/v1/environments/{running.veid}"
    assert api.get(f"{url}/snapshots/").status_code == 404
    for action, body in (("snapshot", {}), ("delete-snapshot", {"name": "mine"}),
                         ("rollback", {"name": "mine", "current_password": "mallory-pass-1"})):
        assert api.post(f"{url}/{action}/", body).status_code == 404
    page = Client()
    page.force_login(mallory)
    assert page.post(f"/vps/{running.veid}/snapshots/delete/", {"name": "mine"}) \
        .status_code == 404
    assert running.operations.count() == 1  # its create only


@pytest.mark.django_db
def test_the_portal_takes_and_rolls_back(running, catalogue, engine,
                                         django_capture_on_commit_callbacks):
    page = Client()
    page.force_login(catalogue["user"])
    url = f"/vps/{running.veid}/"
    assert 'id="btn-snapshot"' in page.get(url).content.decode()
    _sh(engine, running, "echo kept > /root/A")
    with django_capture_on_commit_callbacks(execute=False):
        assert page.post(f"{url}snapshots/take/", {"name": "web"}).status_code == 302
    assert _run_queued(running, engine).state == "succeeded"
    shown = page.get(url).content.decode()
    assert 'data-snapshot="web"' in shown and "1 of 2 kept" in shown
    _sh(engine, running, "rm /root/A")
    wrong = page.post(f"{url}snapshots/rollback/", {"name": "web", "current_password": "x"})
    assert wrong.status_code == 403 and not running.operations.filter(state="queued").exists()
    with django_capture_on_commit_callbacks(execute=False):
        done = page.post(f"{url}snapshots/rollback/", {"name": "web",
                                                       "current_password": PASSWORD})
    assert done.status_code == 302
    assert _run_queued(running, engine).state == "succeeded"
    assert _sh(engine, running, "ls /root").split() == ["A"]
    assert page.post(f"{url}snapshots/explode/", {}).status_code == 404


@pytest.mark.django_db
def test_reconcile_brings_the_rows_in_line_with_the_node(
        running, catalogue, engine, django_capture_on_commit_callbacks):
    from hosting.operations import reconcile
    Snapshot.objects.create(environment=running, name="gone", created="2026-12-01T00:00Z",
                            method="reflink", own_bytes=0)
    engine.snapshot(running.veid, "by-hand")  # staff on the node, say
    with django_capture_on_commit_callbacks(execute=False):
        reconcile.node(catalogue["node"].name, engine)
    (row,) = running.snapshots.all()
    assert row.name == "by-hand" and row.own_bytes > 0  # a full copy here (ext4)

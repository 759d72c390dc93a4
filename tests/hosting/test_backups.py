"""Backups for customers and staff: on-demand and scheduled backups, restore in place,
of some files and into a new VPS (also after termination), browsing and downloading,
retention, expiry and repository checks; on a real engine in-process with Debian's
restic (tests/engine fixtures), like the snapshot tests."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from hosting.customers.models import Customer
from hosting.environments import (backup_browse, backup_node, backup_schedule, services,
                                  tasks)
from hosting.environments.models import Backup, VirtualEnvironment as VE
from hosting.nodes.models import Node
from hosting.operations import executor
from hosting.operations.models import Operation

PASSWORD = "alice-pass-1"  # the catalogue's customer's


def _run_queued(ve, engine):
    op = ve.operations.get(state="queued")
    executor.execute(op.pk, engine)
    return Operation.objects.get(pk=op.pk)


@pytest.fixture
def node_side(monkeypatch, engine):
    """The node's chores worker, in-process: looks into backups are answered at once."""
    monkeypatch.setattr(backup_browse, "ask",
                        lambda node, fetch_id: backup_node.answer(fetch_id, engine))
    monkeypatch.setattr(executor, "engine", lambda: engine)


@pytest.fixture
def running(catalogue, node_run_dir, engine, django_capture_on_commit_callbacks, settings):
    """A running VPS of plan S, which keeps 2 daily and 1 weekly backups."""
    settings.NODE_NAME = catalogue["node"].name
    plan = catalogue["plan"]
    plan.backups_daily, plan.backups_weekly = 2, 1
    plan.save()
    with django_capture_on_commit_callbacks(execute=False):
        services.order(catalogue["customer"], plan, catalogue["template"],
                       "saved.example.com", catalogue["user"], root_password="root-pass-1")
    ve = VE.objects.get(hostname="saved.example.com")
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


def _back_up(api, ve, engine, capture):
    with capture(execute=False):
        answer = api.post(f"/api/v1/environments/{ve.veid}/backup/")
    assert answer.status_code == 202, answer.json()
    op = _run_queued(ve, engine)
    assert op.state == "succeeded", op.error
    return op


@pytest.mark.django_db
def test_back_up_browse_download_and_restore_files(
        running, catalogue, engine, node_side, django_capture_on_commit_callbacks):
    api, url = _api(catalogue["user"]), f"/api/v1/environments/{running.veid}"
    _sh(engine, running, "mkdir -p /srv/site && echo 'hello v1' > /srv/site/index.html")
    op = _back_up(api, running, engine, django_capture_on_commit_callbacks)
    assert op.progress == 100 and "MiB new" in op.message
    listed = api.get(f"{url}/backups/").json()
    assert len(listed["backups"]) == 1 and listed["keep_daily"] == 2
    assert listed["stored_bytes"] > 0 and listed["kept_until"] is None
    backup_id = listed["backups"][0]["id"]
    assert Backup.objects.get().node == "hn1"

    entries = api.get(f"{url}/backups/{backup_id[:8]}/files/", {"path": "/srv/site"}).json()
    assert [(e["name"], e["type"]) for e in entries] == [("index.html", "file")]
    got = api.get(f"{url}/backups/{backup_id}/download/", {"path": "/srv/site/index.html"})
    assert got.status_code == 200 and got.content == b"hello v1\n"
    assert 'filename="index.html"' in got["Content-Disposition"]
    assert api.get(f"{url}/backups/{backup_id}/download/", {"path": "/srv"}).status_code == 400
    assert api.get(f"{url}/backups/{backup_id}/files/", {"path": "/../etc"}).status_code == 400

    _sh(engine, running, "echo broken > /srv/site/index.html")
    with django_capture_on_commit_callbacks(execute=False):
        answer = api.post(f"{url}/restore-files/", {"backup": backup_id[:8],
                                                    "path": "/srv/site/index.html"})
    assert answer.status_code == 202, answer.json()
    assert _run_queued(running, engine).state == "succeeded"
    assert _sh(engine, running, "cat /srv/site/index.html") == "hello v1\n"


@pytest.mark.django_db
def test_whole_restore_needs_the_password_and_reboots(
        running, catalogue, engine, node_side, django_capture_on_commit_callbacks):
    api, url = _api(catalogue["user"]), f"/api/v1/environments/{running.veid}"
    _sh(engine, running, "echo A > /root/A")
    _back_up(api, running, engine, django_capture_on_commit_callbacks)
    backup_id = Backup.objects.get().backup_id
    _sh(engine, running, "rm /root/A; echo B > /root/B")
    assert api.post(f"{url}/restore-backup/", {"backup": backup_id}).status_code == 403
    with django_capture_on_commit_callbacks(execute=False):
        answer = api.post(f"{url}/restore-backup/", {"backup": backup_id,
                                                     "current_password": PASSWORD})
    assert answer.status_code == 202, answer.json()
    assert _run_queued(running, engine).state == "succeeded"
    assert VE.objects.get(pk=running.pk).actual_state == "running"
    assert _sh(engine, running, "ls /root").split() == ["A"]


@pytest.mark.django_db
def test_a_terminated_vps_comes_back_from_its_backup_into_a_new_one(
        running, catalogue, engine, node_side, django_capture_on_commit_callbacks):
    api, url = _api(catalogue["user"]), f"/api/v1/environments/{running.veid}"
    _sh(engine, running, "echo 'customer data' > /root/data")
    _back_up(api, running, engine, django_capture_on_commit_callbacks)
    backup = Backup.objects.get()
    with django_capture_on_commit_callbacks(execute=False):
        assert api.post(f"{url}/terminate/", {"current_password": PASSWORD}).status_code == 202
    assert _run_queued(running, engine).state == "succeeded"
    assert Backup.objects.filter(pk=backup.pk).exists()  # kept after termination
    kept = api.get(f"{url}/backups/").json()["kept_until"]
    assert kept is not None

    with django_capture_on_commit_callbacks(execute=False):
        answer = api.post(f"{url}/backups/{backup.short_id}/restore-new/",
                          {"plan": "S", "hostname": "again.example.com"})
    assert answer.status_code == 202, answer.json()
    new = VE.objects.get(hostname="again.example.com")
    assert new.veid != running.veid and new.owner == running.owner
    assert _run_queued(new, engine).state == "succeeded"
    assert _sh(engine, new, "cat /root/data") == "customer data\n"

    # Past the retention, the nodes delete them (and only them).
    Operation.objects.filter(environment=running, kind="destroy").update(
        finished=timezone.now() - timedelta(days=31))
    sent = []
    from hosting.operations import dispatch
    original = dispatch.publish
    try:
        dispatch.publish = lambda task, args, queue, expires=None: sent.append(args)
        assert tasks.expire_backups() == 1
    finally:
        dispatch.publish = original
    assert sent == [["hn1", [backup.backup_id]]]
    assert backup_node.delete([backup.backup_id], engine) == 1
    assert not Backup.objects.exists() and engine.backups() == []


@pytest.mark.django_db
def test_another_customer_sees_and_restores_nothing(running, catalogue, engine, node_side,
                                                      django_capture_on_commit_callbacks):
    _back_up(_api(catalogue["user"]), running, engine, django_capture_on_commit_callbacks)
    backup = Backup.objects.get()
    mallory = User.objects.create_user("mallory", password="mallory-pass-1")
    Customer.objects.create(user=mallory)
    api, url = _api(mallory), f"/api/v1/environments/{running.veid}"
    assert api.get(f"{url}/backups/").status_code == 404
    assert api.get(f"{url}/backups/{backup.backup_id}/download/",
                   {"path": "/etc/passwd"}).status_code == 404
    assert api.post(f"{url}/backups/{backup.backup_id}/restore-new/",
                    {"plan": "S", "hostname": "stolen.example.com"}).status_code == 404
    assert not VE.objects.filter(hostname="stolen.example.com").exists()


@pytest.mark.django_db
def test_plans_without_backups_and_the_daily_cap(running, catalogue, engine,
                                                 django_capture_on_commit_callbacks):
    api, url = _api(catalogue["user"]), f"/api/v1/environments/{running.veid}"
    plan = running.plan
    plan.backups_daily = 0
    plan.save()
    assert api.post(f"{url}/backup/").status_code == 403
    plan.backups_daily = 2
    plan.save()
    for _ in range(4):
        with django_capture_on_commit_callbacks(execute=False):
            assert api.post(f"{url}/backup/").status_code == 202
        Operation.objects.filter(environment=running, state="queued").update(state="failed")
    assert api.post(f"{url}/backup/").status_code == 409
    assert not Operation.objects.filter(environment=running, state="queued").exists()


@pytest.mark.django_db
def test_the_window_queues_a_few_at_a_time_and_retries(
        running, catalogue, engine, django_capture_on_commit_callbacks):
    now = timezone.now()
    node = Node.objects.get(name="hn1")
    node.backup_window_start = (now.hour - 1) % 24
    node.backup_window_hours, node.backup_parallel = 4, 1
    node.save()
    assert backup_schedule.in_window(node, now)
    assert not backup_schedule.in_window(node, now + timedelta(hours=5))
    night = now + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=False):
        assert backup_schedule.run(night) == 0  # just made: its owner is at work on it
    Operation.objects.filter(environment=running).update(created=now - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False):
        assert backup_schedule.run(now + timedelta(hours=5)) == 0  # closed
        assert backup_schedule.run(night) == 1
        assert backup_schedule.run(night) == 0  # its one slot is taken
    op = running.operations.get(state="queued")
    assert op.kind == "backup" and op.params == {"scheduled": True} and op.requested_by is None
    assert _run_queued(running, engine).state == "succeeded"
    assert Backup.objects.get().scheduled
    with django_capture_on_commit_callbacks(execute=False):
        assert backup_schedule.run(night) == 0  # done for today

    # A failure is tried again after the retry time, and not forever.
    Backup.objects.update(created=timezone.now() - timedelta(days=1))
    for attempt in range(3):
        Operation.objects.create(environment=running, kind="backup", state="failed",
                                 finished=timezone.now() - timedelta(minutes=20),
                                 error="repository unreachable")
        with django_capture_on_commit_callbacks(execute=False):
            queued = backup_schedule.run(night)
        assert queued == (1 if attempt < 2 else 0)
        Operation.objects.filter(environment=running, state="queued").delete()


@pytest.mark.django_db
def test_a_damaged_repository_is_a_staff_warning(running, catalogue, engine, node_side,
                                                 django_capture_on_commit_callbacks):
    _back_up(_api(catalogue["user"]), running, engine, django_capture_on_commit_callbacks)
    assert tasks.check_repository("hn1", read_data=True) == "ok"
    assert Node.objects.get(name="hn1").backup_check_error == ""
    packs = sorted((p for p in Path(engine.backup_repository().url, "data").rglob("*")
                    if p.is_file()), key=lambda p: p.stat().st_size)
    with open(packs[-1], "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 64)
    assert "damaged" in tasks.check_repository("hn1", read_data=True)
    node = Node.objects.get(name="hn1")
    assert "damaged" in node.backup_check_error and node.backup_checked is not None


@pytest.mark.django_db
def test_the_portal_backs_up_browses_and_restores(
        running, catalogue, engine, node_side, django_capture_on_commit_callbacks):
    from django.test import Client
    web = Client()
    web.force_login(catalogue["user"])
    page = f"/vps/{running.veid}/"
    assert "No backups yet." in web.get(page).content.decode()
    _sh(engine, running, "mkdir -p /srv && echo v1 > /srv/a.txt")
    with django_capture_on_commit_callbacks(execute=False):
        assert web.post(f"{page}backups/take/").status_code == 302
    assert _run_queued(running, engine).state == "succeeded"
    backup = Backup.objects.get()
    html = web.get(page).content.decode()
    assert f'data-backup="{backup.short_id}"' in html and "Restore into a new VPS" in html

    browse = f"{page}backups/{backup.short_id}/"
    listing = web.get(browse, {"path": "/srv"}).content.decode()
    assert 'data-entry="a.txt"' in listing
    assert web.get(browse, {"path": "/../x"}).status_code == 400
    got = web.get(f"{browse}download/", {"path": "/srv/a.txt"})
    assert got.status_code == 200 and got.content == b"v1\n"
    assert web.get(f"{page}backups/0000000000/").status_code == 404

    _sh(engine, running, "echo v2 > /srv/a.txt")
    with django_capture_on_commit_callbacks(execute=False):
        assert web.post(f"{browse}restore-files/", {"path": "/srv/a.txt", "into": "/root"}) \
            .status_code == 302
    assert _run_queued(running, engine).state == "succeeded"
    assert _sh(engine, running, "cat /srv/a.txt /root/srv/a.txt") == "v2\nv1\n"

    with django_capture_on_commit_callbacks(execute=False):
        answer = web.post(f"{browse}new/", {"plan": running.plan.pk,
                                            "hostname": "copy.example.com"})
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    copy = VE.objects.get(hostname="copy.example.com")
    assert answer["Location"] == f"/vps/{copy.veid}/"


@pytest.mark.django_db
def test_staff_see_backup_storage_and_repository_trouble(running, catalogue, engine, node_side,
                                                         django_capture_on_commit_callbacks):
    from django.test import Client
    from tests.staffing import make_staff, verified_login
    _back_up(_api(catalogue["user"]), running, engine, django_capture_on_commit_callbacks)
    stored = VE.objects.get(pk=running.pk).backup_bytes
    assert stored > 0
    Node.objects.filter(name="hn1").update(backup_check_error="pack 1234 is damaged",
                                           backup_checked=timezone.now())
    web = verified_login(Client(), make_staff("admin1"))
    node = web.get(f"/staff/nodes/{catalogue['node'].pk}/").content.decode()
    assert "pack 1234 is damaged" in node and 'id="backup-window-form"' in node
    assert "backup repository damaged" in web.get("/staff/nodes/").content.decode()
    answer = web.post(f"/staff/nodes/{catalogue['node'].pk}/backups/",
                      {"backup_window_start": 22, "backup_window_hours": 4,
                       "backup_parallel": 2, "backup_limit_kib": 5120})
    assert answer.status_code == 302
    assert Node.objects.filter(backup_window_start=22, backup_parallel=2).exists()
    from hosting.usage import reports
    row = next(r for r in reports.node_report() if r["node"] == "hn1")
    assert row["backup_bytes"] == stored

"""Regression tests for what the review of the dashboard found."""

import os

import pytest
from django.core.cache import cache

from hosting.core.errors import Forbidden, Invalid
from hosting.environments import services
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor, reconcile
from hosting.operations.models import Operation
from ve import VEConfig

pytestmark = pytest.mark.django_db


def order(catalogue, hostname, **kw):
    return services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                          hostname, catalogue["user"], root_password="root-pass-123", **kw)


def test_an_overlong_root_password_is_refused_not_queued(catalogue):
    with pytest.raises(Invalid, match="at most 256 bytes"):
        services.hash_password("x" * 600)
    assert services.hash_password("x" * 256).startswith("$6$")


def test_a_ve_made_outside_the_dashboard_is_never_touched(catalogue, engine, node_run_dir):
    engine.create(VEConfig(101, "operators-own", "busybox"))
    op = order(catalogue, "cust.example.com")
    assert op.environment.veid == 101  # the dashboard did not know yet
    executor.execute(op.pk, engine)
    op.refresh_from_db()
    assert op.state == "failed" and "does not manage" in op.error
    assert engine.config(101).hostname == "operators-own"  # left alone
    assert VE.objects.get(pk=op.environment_id).actual_state == "destroyed"
    assert not op.environment.addresses.exists()
    # The next reconcile remembers the VEID, and the next order skips it.
    assert reconcile.node("hn1", engine)["unmanaged"] == [101]
    assert order(catalogue, "cust2.example.com").environment.veid == 102


def test_a_rollback_that_fails_is_finished_by_reconcile(catalogue, engine, node_run_dir,
                                                       monkeypatch,
                                                       django_capture_on_commit_callbacks):
    op = order(catalogue, "undo.example.com")
    real_destroy = engine.destroy
    calls = []

    def failing_logins(ctx):
        raise __import__("ve").ResourceError("no shadow file", ctx.ve.veid)

    def destroy_fails_once(veid, timeout=30):
        calls.append(veid)
        if len(calls) == 1:
            raise OSError("device busy")
        return real_destroy(veid, timeout=timeout)

    monkeypatch.setattr("hosting.operations.runners.install_logins", failing_logins)
    monkeypatch.setattr(engine, "destroy", destroy_fails_once)
    executor.execute(op.pk, engine)
    ve = VE.objects.get(pk=op.environment_id)
    assert Operation.objects.get(pk=op.pk).state == "failed"
    assert (ve.desired_state, ve.actual_state) == ("destroyed", "unknown")
    assert engine.status(ve.veid).state == "running"  # the failed rollback left it

    with django_capture_on_commit_callbacks(execute=False):
        summary = reconcile.node("hn1", engine)
    assert summary["queued"] == [[ve.veid, "destroy"]]
    destroy = ve.operations.get(kind="destroy", state="queued")
    executor.execute(destroy.pk, engine)
    assert VE.objects.get(pk=ve.pk).actual_state == "destroyed"
    assert engine.layout.veids() == [] and not ve.addresses.exists()


def test_an_interrupted_rollback_is_completed_not_rerun(catalogue, engine, node_run_dir):
    op = order(catalogue, "rollback.example.com")
    # What a worker killed inside the rollback of a failed create leaves behind.
    Operation.objects.filter(pk=op.pk).update(
        state="running", attempts=1, error="template broken",
        params={**op.params, "undoing": True})
    reconcile.node("hn1", engine)
    op.refresh_from_db()
    assert (op.state, op.error) == ("failed", "template broken")
    assert op.environment.actual_state == "destroyed" and engine.layout.veids() == []


def test_wrong_current_passwords_are_limited(catalogue):
    cache.clear()
    user = catalogue["user"]
    for _ in range(services.REAUTH_FAILURES):
        with pytest.raises(Forbidden, match="did not match"):
            services.reauthenticate(user, "wrong")
    with pytest.raises(Forbidden, match="too many wrong passwords"):
        services.reauthenticate(user, "alice-pass-1")  # even the right one, for a while
    cache.clear()
    services.reauthenticate(user, "alice-pass-1")


def test_ssh_key_comments_are_written_verbatim_once(catalogue, engine, node_run_dir):
    op = order(catalogue, "keys.example.com")
    executor.execute(op.pk, engine)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample CORP\\nbob"
    engine.add_ssh_key(op.environment.veid, key)
    engine.add_ssh_key(op.environment.veid, key)
    keys = engine.exec(op.environment.veid, ["cat", "/root/.ssh/authorized_keys"]).stdout
    assert keys == (key + "\n").encode()


def test_the_web_users_symlinks_are_not_followed_by_root(monkeypatch):
    import shutil
    import tempfile
    from pathlib import Path

    from hosting.stack import Stack
    monkeypatch.delenv("DATABASE_URL", raising=False)  # the stack's own SQLite file is the point
    top = Path(tempfile.mkdtemp(prefix="hosting-chown-", dir="/tmp"))  # readable by 'hosting'
    try:
        os.chmod(top, 0o755)
        data = top / "data"
        (data / "db").mkdir(parents=True)
        target = top / "root-only"
        target.write_text("secret")
        (data / "db" / "planted").symlink_to(target)  # as a compromised web process would
        stack = Stack(data)
        try:
            stack.prepare()
        finally:
            stack.stop()
        assert target.stat().st_uid == 0
        assert (data / "db" / "hosting.sqlite3").stat().st_uid != 0
        assert data.stat().st_uid == 0
    finally:
        shutil.rmtree(top)


def test_the_owner_filter_does_not_reveal_which_customers_exist(catalogue):
    from rest_framework.test import APIClient
    client = APIClient()
    client.force_authenticate(catalogue["user"])
    for owner in (catalogue["customer"].pk + 1, 99999):
        response = client.get(f"/api/v1/environments/?owner={owner}")
        assert response.status_code == 200 and response.json()["count"] == 0

"""The node side in-process: operations run through a real engine, reconcile reports drift.

The database is pytest-django's; the engine works on a throwaway VE_ROOT and
cgroup subtree (tests/engine fixtures), so VEs really start.
"""

import pytest

from hosting.environments import services
from hosting.environments.models import VirtualEnvironment as VE
from hosting.ipam.models import IPAddress
from hosting.operations import executor, reconcile
from hosting.operations.models import Operation

pytestmark = pytest.mark.django_db


@pytest.fixture
def ordered(catalogue, node_run_dir, django_capture_on_commit_callbacks):
    """An order placed (not yet run): its create Operation."""
    with django_capture_on_commit_callbacks(execute=False) as sent:
        op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                            "exec1.example.com", catalogue["user"],
                            root_password="root-pass-123")
    assert len(sent) == 1
    return op


def test_create_runs_and_wipes_the_password_hash(ordered, engine):
    assert ordered.params["password_hash"].startswith("$6$")
    assert "root-pass-123" not in str(ordered.params)
    executor.execute(ordered.pk, engine)
    op = Operation.objects.get(pk=ordered.pk)
    assert (op.state, op.progress, op.attempts) == ("succeeded", 100, 1)
    assert "password_hash" not in op.params
    ve = VE.objects.get(pk=op.environment_id)
    assert ve.actual_state == "running"
    assert engine.status(ve.veid).state == "running"
    assert engine.config(ve.veid).limits.ram == 128 << 20


def test_executing_twice_runs_once(ordered, engine):
    executor.execute(ordered.pk, engine)
    pid = engine.status(ordered.environment.veid).init_pid
    executor.execute(ordered.pk, engine)
    assert Operation.objects.get(pk=ordered.pk).attempts == 1
    assert engine.status(ordered.environment.veid).init_pid == pid


def test_failed_create_leaves_nothing(ordered, engine, catalogue):
    # A template the node does not have and cannot build (staff may no longer rename a
    # template in use, so the row is changed underneath, as a restored backup might).
    type(catalogue["template"]).objects.filter(pk=catalogue["template"].pk).update(
        name="nosuchtemplate")
    executor.execute(ordered.pk, engine)
    op = Operation.objects.get(pk=ordered.pk)
    assert op.state == "failed" and "nosuchtemplate" in op.error
    assert "password_hash" not in op.params
    ve = VE.objects.get(pk=op.environment_id)
    assert ve.actual_state == "destroyed"
    assert not IPAddress.objects.filter(environment=ve).exists()
    assert engine.layout.veids() == []


def test_interrupted_operation_is_run_again_by_reconcile(ordered, engine, catalogue):
    # What a worker killed mid-way leaves: the row says running, nobody holds the lock.
    Operation.objects.filter(pk=ordered.pk).update(state="running", attempts=1, progress=30)
    summary = reconcile.node("hn1", engine)
    assert summary["resumed"] == [str(ordered.pk)]
    op = Operation.objects.get(pk=ordered.pk)
    assert (op.state, op.attempts) == ("succeeded", 2)
    assert engine.status(op.environment.veid).state == "running"


def test_an_operation_interrupted_too_often_gives_up_and_rolls_back(ordered, engine):
    Operation.objects.filter(pk=ordered.pk).update(state="running",
                                                   attempts=executor.MAX_ATTEMPTS)
    reconcile.node("hn1", engine)
    op = Operation.objects.get(pk=ordered.pk)
    assert op.state == "failed" and "gave up" in op.error
    assert op.environment.actual_state == "destroyed" and engine.layout.veids() == []
    assert not op.environment.addresses.exists()


def test_reconcile_reports_drift_and_queues_plan_limits(ordered, engine, catalogue,
                                                        django_capture_on_commit_callbacks):
    from ve import VEConfig
    executor.execute(ordered.pk, engine)
    ve = VE.objects.get(pk=ordered.environment_id)
    engine.create(VEConfig(veid=999, hostname="stray", template="busybox"))  # unknown to the DB
    catalogue["plan"].ram_mb = 192  # as if changed while the VE was busy
    catalogue["plan"].save()
    with django_capture_on_commit_callbacks(execute=False) as sent:
        summary = reconcile.node("hn1", engine)
    assert "VE 999 is on the node but not in the dashboard" in summary["drift"]
    assert summary["unmanaged"] == [999]
    assert summary["queued"] == [[ve.veid, "set"]] and len(sent) == 1
    assert ve.operations.filter(kind="set", state="queued").exists()
    node = catalogue["node"].__class__.objects.get(pk=catalogue["node"].pk)
    assert node.drift == summary["drift"] and node.unmanaged_veids == [999]


def test_an_address_added_live_leaves_reconcile_nothing_to_do(
        ordered, engine, catalogue, django_capture_on_commit_callbacks):
    executor.execute(ordered.pk, engine)
    ve = VE.objects.get(pk=ordered.environment_id)
    from tests.staffing import make_staff
    staff = make_staff("staff1")
    with django_capture_on_commit_callbacks(execute=False):
        op = services.add_address(ve, staff, version=4)
    assert _run(op, engine).state == "succeeded"
    on_node = engine.config(ve.veid).ips
    assert set(on_node) == set(ve.engine_ips()) and len(on_node) == 3
    assert on_node != ve.engine_ips()  # appended on the node, IPv4 first in the dashboard
    with django_capture_on_commit_callbacks(execute=False) as sent:
        summary = reconcile.node("hn1", engine)
    assert summary["queued"] == [] and sent == []


def test_password_reset_and_ssh_key_reach_the_ve(ordered, engine, catalogue):
    executor.execute(ordered.pk, engine)
    ve = VE.objects.get(pk=ordered.environment_id)
    op = services.reset_password(ve, catalogue["user"], "new-root-pass-9")
    Operation.objects.filter(pk=op.pk).update(params={**op.params, "ssh_key": "ssh-ed25519 "
                                                      "AAAAC3NzaC1lZDI1NTE5AAAAIExample alice"})
    before = engine.exec(ve.veid, ["cat", "/etc/shadow"]).stdout
    executor.execute(op.pk, engine)
    assert Operation.objects.get(pk=op.pk).state == "succeeded"
    after = engine.exec(ve.veid, ["cat", "/etc/shadow"]).stdout
    assert after != before and after.startswith(b"root:$6$")
    keys = engine.exec(ve.veid, ["cat", "/root/.ssh/authorized_keys"]).stdout
    assert keys == b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample alice\n"


def _run(op, engine):
    executor.execute(op.pk, engine)
    return Operation.objects.get(pk=op.pk)


def test_a_smaller_disk_waits_for_a_reboot_and_never_keeps_the_vps_down(
        ordered, engine, catalogue, django_capture_on_commit_callbacks):
    import os
    from hosting.operations import services as operations
    from hosting.plans import services as plans
    plan, staff = catalogue["plan"], catalogue["user"]
    plan.disk_gib = 2
    plan.save()
    executor.execute(ordered.pk, engine)
    ve = VE.objects.get(pk=ordered.environment_id)
    assert engine.disk_usage(ve.veid).space_total > 1536 << 20  # 2 GiB less the fs log

    before = plan.engine_limits()
    plan.disk_gib, plan.ram_mb = 1, 160
    with django_capture_on_commit_callbacks(execute=False):
        (op,) = plans.save(plan, staff, before=before)
    op = _run(op, engine)
    assert op.state == "succeeded" and "disk changes at the next reboot" in op.message
    assert engine.config(ve.veid).limits.ram == 160 << 20  # the rest applied live
    assert engine.status(ve.veid).state == "running"

    # Meanwhile the customer stores 1.2 GiB (allocated in place, no writing needed).
    fd = os.open(engine.layout.private(ve.veid) / "root" / "data", os.O_CREAT | os.O_WRONLY)
    os.posix_fallocate(fd, 0, 1200 << 20)
    os.close(fd)
    # The reboot tries the smaller disk; the data does not fit, so it keeps its disk.
    with django_capture_on_commit_callbacks(execute=False):
        op = operations.request(VE.objects.get(pk=ve.pk), Operation.Kind.RESTART, staff, {})
    op = _run(op, engine)
    assert op.state == "succeeded", op.error
    assert "disk stays as it was" in op.message and "cannot shrink" in op.message
    assert engine.status(ve.veid).state == "running"
    assert engine.config(ve.veid).limits.diskspace == 2 << 30
    # Reconcile does not retry it every cycle: it waits for a reboot after the data went.
    with django_capture_on_commit_callbacks(execute=False) as sent:
        summary = reconcile.node("hn1", engine)
    assert summary["queued"] == [] and sent == []


def test_a_node_sample_of_a_real_ve_is_stored(ordered, engine):
    from hosting.usage import collection
    from hosting.usage.models import NodeSample, UsageSample
    executor.execute(ordered.pk, engine)
    ve = VE.objects.get(pk=ordered.environment_id)
    assert collection.store("hn1", engine.sample()) == 1
    sample = UsageSample.objects.get(environment=ve)
    assert sample.ram > 0 and sample.processes >= 1 and sample.cpu_ns > 0
    assert sample.disk > 0 and sample.inodes > 0
    assert NodeSample.objects.get().cpus >= 1

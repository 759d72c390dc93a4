"""Plan changes on a real node: the engine in-process, then the whole product over HTTP.

The first tests run the "plan" operation through the executor and a real
engine (a throwaway VE_ROOT and cgroup subtree, tests/engine fixtures); the
last one goes through the API, Redis and the node's root worker
(tests/livestack.py) and checks the node with vectl and the cgroup files.
"""

import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from hosting.core.models import AuditLog
from hosting.environments import plan_change, services
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor
from hosting.operations.models import Operation
from hosting.plans.models import Plan
from hosting.usage.models import UsageSample
from tests.livestack import ApiError
from tests.staffing import make_staff

MIB = 1 << 20


def _run(op, engine):
    executor.execute(op.pk, engine)
    return Operation.objects.get(pk=op.pk)


@pytest.fixture
def running(catalogue, node_run_dir, engine, django_capture_on_commit_callbacks):
    """A VE of plan S (128 MiB), created and running on the real engine."""
    with django_capture_on_commit_callbacks(execute=False):
        op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                            "plan1.example.com", catalogue["user"], root_password="root-pass-123")
    assert _run(op, engine).state == "succeeded"
    return VE.objects.get(pk=op.environment_id)


def _memory_limit_file(engine, veid):
    return Path(engine.cgroups.file_path(str(veid), "memory.limit_in_bytes"))


@pytest.mark.django_db
def test_upgrade_applies_live_without_a_restart(running, engine, catalogue,
                                                django_capture_on_commit_callbacks):
    bigger = Plan.objects.create(name="M", ram_mb=256, swap_mb=0, cpus=1, processes=128,
                                 disk_gib=12, ipv4_count=2, monthly_price=Decimal("6"))
    pid = engine.status(running.veid).init_pid
    limit_file = _memory_limit_file(engine, running.veid)
    assert int(limit_file.read_text()) == 128 * MIB
    with django_capture_on_commit_callbacks(execute=False) as sent:
        op = plan_change.change(running, bigger, catalogue["user"])
    assert len(sent) == 1
    op = _run(op, engine)
    assert (op.state, op.error_code) == ("succeeded", ""), op.error
    assert int(limit_file.read_text()) == 256 * MIB  # the cgroup file changed, live
    status = engine.status(running.veid)
    assert status.init_pid == pid and status.ram_limit == 256 * MIB
    config = engine.config(running.veid).limits
    assert (config.ram, config.numproc, config.diskspace) == (256 * MIB, 128, 12 << 30)
    assert engine.disk_usage(running.veid).space_total > 10 << 30  # the disk grew while running
    assert VE.objects.get(pk=running.pk).plan == bigger
    # The second IPv4 address the plan includes is the VE's, live, inside it too.
    added = op.params["added"]
    assert len(added) == 1 and added[0].startswith("198.18.5.")
    assert added[0] in engine.config(running.veid).ips
    assert added[0] in engine.exec(running.veid, ["ip", "-4", "addr"]).stdout.decode()


@pytest.mark.django_db
def test_node_refuses_a_shrink_the_data_outgrew_and_the_old_plan_comes_back(
        running, engine, catalogue):
    staff = make_staff("ops", password="x")
    few = Plan.objects.create(name="few-files", ram_mb=128, cpus=1, processes=64, inodes=2048,
                              ipv4_count=2, monthly_price=Decimal("2"))
    addresses = sorted(running.addresses.values_list("address", flat=True))
    # As the web side last saw it: little in use, so the request passes...
    UsageSample.objects.create(environment=running, time=timezone.now() - timedelta(seconds=5),
                               disk=20 * MIB, inodes=600)
    op = plan_change.change(running, few, staff)
    assert VE.objects.get(pk=running.pk).plan == few
    # ...but since then the VPS made 3,000 files: the node checks again before shrinking.
    engine.exec(running.veid, ["sh", "-c", "mkdir /many && cd /many && "
                               "for i in $(seq 3000); do : > f$i; done"])
    before = engine.config(running.veid).limits
    op = _run(op, engine)
    assert (op.state, op.error_code) == ("failed", "disk_too_small"), op.error
    assert "files" in op.error
    assert VE.objects.get(pk=running.pk).plan == catalogue["plan"]  # the old plan is back
    assert engine.config(running.veid).limits == before
    # the address the plan brought is back in its pool, and not on the node
    assert sorted(running.addresses.values_list("address", flat=True)) == addresses
    assert not set(op.params["added"]) & set(engine.config(running.veid).ips)
    assert AuditLog.objects.filter(action="ve.plan_reverted", object_id=str(running.veid)).exists()
    assert engine.status(running.veid).state == "running"


@pytest.mark.django_db
def test_a_smaller_disk_waits_for_the_next_reboot(running, engine, catalogue):
    from hosting.operations import services as operations
    staff = make_staff("ops", password="x")
    smaller = Plan.objects.create(name="S-5G", ram_mb=128, cpus=1, processes=64, disk_gib=5,
                                  monthly_price=Decimal("2"))
    UsageSample.objects.create(environment=running, time=timezone.now(), disk=20 * MIB,
                               inodes=600)
    pid = engine.status(running.veid).init_pid
    op = _run(plan_change.change(running, smaller, staff), engine)
    assert op.state == "succeeded" and "changes at the next reboot" in op.message, op.error
    assert engine.config(running.veid).limits.diskspace == 10 << 30  # not yet: it runs
    assert engine.status(running.veid).init_pid == pid
    op = _run(operations.request(running, "restart", staff), engine)
    assert op.state == "succeeded", op.error
    assert engine.config(running.veid).limits.diskspace == 5 << 30
    assert engine.disk_usage(running.veid).space_total <= 5 << 30


@pytest.mark.django_db
def test_failed_operations_keep_an_error_code(running, engine, catalogue):
    op = services.reset_password(running, catalogue["user"], "new-root-pass-9")
    engine.destroy(running.veid)  # gone behind the dashboard's back
    op = _run(op, engine)
    assert (op.state, op.error_code) == ("failed", "not_found"), op.error


@pytest.mark.django_db
def test_a_reboot_from_inside_that_did_not_start_again_has_its_code(catalogue):
    from hosting.operations import node_events
    ve = VE.objects.create(veid=150, owner=catalogue["customer"], plan=catalogue["plan"],
                           node=catalogue["node"], template=catalogue["template"],
                           hostname="events.example.com", actual_state="running")
    node_events.record("hn1", {"id": "e1", "veid": 150, "reason": "reboot", "restarted": False,
                               "error": "start failed: no init", "time": time.time()})
    op = ve.operations.get()
    assert (op.state, op.error_code) == ("failed", "start_failed")


# -- through the whole product -----------------------------------------------------------

def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return value


def _cgroup(live_stack, veid):
    """The VE's RAM, CPU-limit and process limit files (cgroup v1) as numbers."""
    cgroups = live_stack.engine().cgroups
    return {name: int(Path(cgroups.file_path(str(veid), name)).read_text())
            for name in ("memory.limit_in_bytes", "cpu.cfs_quota_us", "pids.max")}


def test_api_upgrade_live_and_a_downgrade_the_data_does_not_fit(live_stack):
    staff, customer = live_stack.api("admin"), live_stack.api("demo")
    # Plans of its own: other tests of this session's stack edit the demo plans.
    for name, ram, cpu, processes, disk in (("Live S", 256, 50, 128, 5),
                                            ("Live M", 512, 100, 256, 10)):
        staff.post("/api/v1/plans/", {"name": name, "ram_mb": ram, "swap_mb": 256,
                                      "cpu_limit_pct": cpu, "cpus": 1, "processes": processes,
                                      "disk_gib": disk, "monthly_price": "3.00"}, expect=201)
    op = customer.wait_operation(customer.post("/api/v1/environments/", {
        "plan": "Live S", "template": "busybox", "hostname": "plan-live.example.com",
        "root_password": "plan-pass-123"}))
    assert op["state"] == "succeeded", (op, live_stack.logs("node-worker"))
    veid = op["veid"]
    before = live_stack.vectl_json("status", veid)
    limit = Path(live_stack.engine().cgroups.file_path(str(veid), "memory.limit_in_bytes"))
    assert int(limit.read_text()) == 256 * MIB == before["ram_limit"]
    assert _cgroup(live_stack, veid) == {"memory.limit_in_bytes": 256 * MIB,
                                         "cpu.cfs_quota_us": 50_000, "pids.max": 128}

    up = customer.post(f"/api/v1/environments/{veid}/plan/", {"plan": "Live M"},
                       headers={"Idempotency-Key": f"up-{veid}"})
    again = customer.post(f"/api/v1/environments/{veid}/plan/", {"plan": "Live M"},
                          headers={"Idempotency-Key": f"up-{veid}"})
    assert up["kind"] == "plan" and again["id"] == up["id"]
    done = customer.wait_operation(up)
    assert done["state"] == "succeeded", (done, live_stack.logs("node-worker"))
    after = live_stack.vectl_json("status", veid)
    assert int(limit.read_text()) == 512 * MIB == after["ram_limit"]  # the cgroup file changed
    assert _cgroup(live_stack, veid) == {"memory.limit_in_bytes": 512 * MIB,
                                         "cpu.cfs_quota_us": 100_000, "pids.max": 256}
    assert after["init_pid"] == before["init_pid"]  # live: no restart
    config = live_stack.engine().config(veid).limits
    assert (config.ram, config.numproc, config.diskspace) == (512 * MIB, 256, 10 << 30)
    assert after["disk"]["space_total"] > 5 << 30
    assert customer.get(f"/api/v1/environments/{veid}/")["plan"] == "Live M"
    # The same plan again: 200 with the VPS, nothing queued.
    assert customer.post(f"/api/v1/environments/{veid}/plan/", {"plan": "Live M"},
                         expect=200)["plan"] == "Live M"
    audit = staff.get(f"/api/v1/audit-log/?action=ve.plan&object_id={veid}")["results"]
    assert [(a["actor"], a["detail"]["plan"], a["detail"]["previous"]) for a in audit] == \
        [("demo", "Live M", "Live S")]

    # 1.2 GiB of data: a 1 GiB plan cannot hold it. Refused, with the reason, once measured.
    staff.post("/api/v1/plans/", {"name": "Mini", "ram_mb": 128, "disk_gib": 1,
                                  "monthly_price": "1.00"}, expect=201)
    filled = live_stack.engine().exec(veid, ["dd", "if=/dev/zero", "of=/ballast", "bs=1M",
                                             "count=1200", "conv=fsync"])
    assert filled.returncode == 0, filled.stderr
    disk = lambda: [d for d in staff.get(f"/api/v1/environments/{veid}/usage/?range=1h")["disk"]
                    if d is not None]
    try:
        _wait(lambda: disk() and disk()[-1] >= 1200 * MIB, 60, "a disk sample with the ballast")
    except AssertionError:
        raise AssertionError((disk()[-5:], live_stack.vectl_json("status", veid)["disk"]))
    with pytest.raises(ApiError) as refused:
        staff.post(f"/api/v1/environments/{veid}/plan/", {"plan": "Mini"})
    assert refused.value.status == 409 and "too small" in refused.value.body
    assert customer.get(f"/api/v1/environments/{veid}/")["plan"] == "Live M"
    assert live_stack.engine().config(veid).limits.diskspace == 10 << 30
    customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))

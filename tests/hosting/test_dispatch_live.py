"""Dispatch for real: API -> Redis -> the node's root Celery worker -> the engine.

Runs the whole product (tests/livestack.py) and checks the node itself with
vectl, not the dashboard's opinion of it.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.livestack import NODE, ApiError


def order(api, hostname, plan="VPS S", template="busybox", **extra):
    return api.post("/api/v1/environments/", {"plan": plan, "template": template,
                                              "hostname": hostname,
                                              "root_password": "correct-horse-1", **extra})


def free_addresses(staff):
    return {p["name"]: p["free"] for p in staff.get("/api/v1/ip-pools/")["results"]}


def test_order_reboot_replan_terminate(live_stack):
    staff, customer = live_stack.api("admin"), live_stack.api("demo")
    free_before = free_addresses(staff)

    op = live_stack.api("demo").wait_operation(order(customer, "e2e-one.example.com"))
    assert op["state"] == "succeeded", (op, live_stack.logs("node-worker"))
    veid = op["veid"]
    listed = {ve["veid"]: ve for ve in live_stack.vectl_json("list")}
    assert listed[veid]["state"] == "running"
    assert listed[veid]["hostname"] == "e2e-one.example.com"
    ve = customer.get(f"/api/v1/environments/{veid}/")
    assert ve["actual_state"] == "running" and len(ve["addresses"]) == 2
    assert free_addresses(staff) == {k: v - 1 for k, v in free_before.items()}
    # The node wired the VE with the addresses from the pools: the node's host answers them.
    assert sorted(listed[veid]["ips"]) == sorted(ve["addresses"])
    for address in ve["addresses"]:
        assert live_stack.in_node_netns("busybox", "ping", "-c", "1", "-W", "2",
                                        address).returncode == 0, address
    # The root password arrived as a hash, not in clear.
    shadow = live_stack.engine().exec(veid, ["cat", "/etc/shadow"]).stdout.decode()
    assert shadow.startswith("root:$6$") and "correct-horse-1" not in shadow

    pid_before = listed[veid]["init_pid"]
    op = customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/reboot/"))
    assert op["state"] == "succeeded", op
    status = live_stack.vectl_json("status", veid)
    assert status["state"] == "running" and status["init_pid"] != pid_before

    # Staff give the plan more RAM: the running VE's limit follows, live.
    plan = next(p for p in staff.get("/api/v1/plans/")["results"] if p["name"] == "VPS S")
    staff.patch(f"/api/v1/plans/{plan['id']}/", {"ram_mb": plan["ram_mb"] + 64})
    deadline = time.monotonic() + 30
    while live_stack.vectl_json("status", veid)["ram_limit"] != (plan["ram_mb"] + 64) << 20:
        assert time.monotonic() < deadline, live_stack.logs("node-worker")
        time.sleep(0.3)
    assert live_stack.vectl_json("status", veid)["init_pid"] == status["init_pid"]  # no restart
    staff.patch(f"/api/v1/plans/{plan['id']}/", {"ram_mb": plan["ram_mb"]})

    # And more disk: the VE's disk grows while it runs.
    disk = live_stack.vectl_json("status", veid)["disk"]
    assert disk["space_total"] <= plan["disk_gib"] << 30
    _wait_idle(customer, veid)
    staff.patch(f"/api/v1/plans/{plan['id']}/", {"disk_gib": plan["disk_gib"] + 1})
    deadline = time.monotonic() + 30
    while live_stack.vectl_json("status", veid)["disk"]["space_total"] <= plan["disk_gib"] << 30:
        assert time.monotonic() < deadline, live_stack.logs("node-worker")
        time.sleep(0.3)
    assert live_stack.vectl_json("status", veid)["init_pid"] == status["init_pid"]
    assert engine_config_disk(live_stack, veid) == (plan["disk_gib"] + 1) << 30
    _wait_idle(customer, veid)
    # Back down: a running VE's disk cannot shrink, so that waits for its next reboot.
    staff.patch(f"/api/v1/plans/{plan['id']}/", {"disk_gib": plan["disk_gib"]})
    _wait_idle(customer, veid)
    failed = staff.get(f"/api/v1/operations/?environment__veid={veid}&state=failed")
    assert failed["count"] == 0, failed
    assert live_stack.vectl_json("status", veid)["disk"]["space_total"] > plan["disk_gib"] << 30
    op = customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/reboot/"))
    assert op["state"] == "succeeded", (op, live_stack.logs("node-worker"))
    assert live_stack.vectl_json("status", veid)["disk"]["space_total"] <= plan["disk_gib"] << 30
    assert engine_config_disk(live_stack, veid) == plan["disk_gib"] << 30

    _wait_idle(customer, veid)
    op = customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))
    assert op["state"] == "succeeded", op
    assert veid not in {ve["veid"] for ve in live_stack.vectl_json("list", "-a")}
    engine = live_stack.engine()
    assert not engine.layout.conf(veid).exists() and not engine.layout.private(veid).exists()
    assert not engine.layout.image(veid).exists()
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{live_stack.cgroup_parent}/{veid}"))
    assert customer.get(f"/api/v1/environments/{veid}/")["addresses"] == []
    assert free_addresses(staff) == free_before
    assert f"veth{veid}" not in live_stack.in_node_netns("ip", "-o", "link").stdout


def engine_config_disk(live_stack, veid):
    return live_stack.engine().config(veid).limits.diskspace


def _wait_idle(api, veid, timeout=30):
    deadline = time.monotonic() + timeout
    while api.get(f"/api/v1/operations/?environment__veid={veid}&state=queued")["count"] \
            or api.get(f"/api/v1/operations/?environment__veid={veid}&state=running")["count"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)


@pytest.fixture
def big_template(live_stack, tmp_path):
    """A template big enough that unpacking it takes a while: room to kill mid-create."""
    engine = live_stack.engine()
    if not any(t.name == "busybox" for t in engine.template_list()):
        engine.template_build("busybox")
    root = tmp_path / "rootfs"
    root.mkdir()
    base = next(live_stack.ve_root.glob("template/cache/busybox.tar*"))
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(base)], check=True)
    for i in range(8):
        with open(root / f"ballast{i}", "wb") as f:
            f.write(os.urandom(48 << 20))
    tarball = tmp_path / "bigbox.tar"
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."],
                   check=True)
    engine.template_import("bigbox", str(tarball))
    staff = live_stack.api("admin")
    staff.post("/api/v1/templates/", {"name": "bigbox", "title": "Big box"}, expect=201)
    plan = staff.post("/api/v1/plans/", {
        "name": "Big", "ram_mb": 128, "disk_gib": 1, "monthly_price": "1.00",
        "templates": ["bigbox"], "ipv6_count": 0}, expect=201)
    return plan


def test_worker_killed_mid_create_is_completed_by_reconcile(live_stack, big_template):
    staff, customer = live_stack.api("admin"), live_stack.api("demo")
    free_before = free_addresses(staff)
    op = order(customer, "e2e-killed.example.com", plan="Big", template="bigbox")
    deadline = time.monotonic() + 60
    while (current := customer.get(f"/api/v1/operations/{op['id']}/"))["progress"] < 30:
        assert current["state"] in ("queued", "running"), current
        assert time.monotonic() < deadline, live_stack.logs("node-worker")
        time.sleep(0.02)
    live_stack.kill_node_worker()  # SIGKILL to the worker and its pool, mid-unpack
    veid = current["veid"]
    interrupted = customer.get(f"/api/v1/operations/{op['id']}/")
    assert interrupted["state"] == "running", interrupted
    assert live_stack.vectl("status", veid).returncode != 0 or \
        live_stack.vectl_json("status", veid)["state"] != "running"

    live_stack.restart_node_worker()  # its start-up reconcile picks the operation up
    final = customer.wait_operation(op, timeout=120)
    assert final["state"] in ("succeeded", "failed"), final
    ve = staff.get(f"/api/v1/environments/{veid}/")
    on_node = {v["veid"]: v for v in live_stack.vectl_json("list", "-a")}
    if final["state"] == "succeeded":  # fully there
        assert final["attempts"] == 2
        assert on_node[veid]["state"] == "running" and ve["actual_state"] == "running"
        assert live_stack.engine().exec(veid, ["ls", "/ballast7"]).returncode == 0
        op = customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))
        assert op["state"] == "succeeded"
    else:  # fully gone
        assert veid not in on_node and ve["actual_state"] == "destroyed"
    assert free_addresses(staff) == free_before


def test_second_delivery_of_a_finished_operation_changes_nothing(live_stack):
    customer = live_stack.api("demo")
    op = customer.wait_operation(order(customer, "e2e-twice.example.com"))
    veid = op["veid"]
    pid = live_stack.vectl_json("status", veid)["init_pid"]
    reboot = customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/reboot/"))
    assert reboot["attempts"] == 1, (reboot, live_stack.logs("node-worker"))
    pid_after = live_stack.vectl_json("status", veid)["init_pid"]
    assert pid_after != pid
    # Deliver the same reboot again, as Redis would after a lost ack.
    message_id = live_stack.send_task("hosting.operations.tasks.run_operation", [reboot["id"]],
                                      f"node.{NODE}")
    deadline = time.monotonic() + 30  # wait until the worker has really run it
    while f"run_operation[{message_id}] succeeded" not in live_stack.logs("node-worker"):
        assert time.monotonic() < deadline, live_stack.logs("node-worker")
        time.sleep(0.2)
    assert live_stack.vectl_json("status", veid)["init_pid"] == pid_after
    again = customer.get(f"/api/v1/operations/{reboot['id']}/")
    assert again["attempts"] == reboot["attempts"] == 1
    customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))


def test_busy_vps_answers_409(live_stack):
    customer = live_stack.api("demo")
    op = customer.wait_operation(order(customer, "e2e-busy.example.com"))
    veid = op["veid"]
    customer.post(f"/api/v1/environments/{veid}/stop/")
    with pytest.raises(ApiError) as refused:
        customer.post(f"/api/v1/environments/{veid}/reboot/")
    assert refused.value.status == 409 and "busy" in refused.value.body
    _wait_idle(customer, veid)
    customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))


def test_reinstall_wipes_the_system_and_keeps_the_addresses(live_stack):
    customer = live_stack.api("demo")
    op = customer.wait_operation(order(customer, "e2e-reinstall.example.com"))
    veid = op["veid"]
    engine = live_stack.engine()
    assert engine.exec(veid, ["touch", "/root/old-data"]).returncode == 0
    shadow = engine.exec(veid, ["cat", "/etc/shadow"]).stdout
    addresses = customer.get(f"/api/v1/environments/{veid}/")["addresses"]

    with pytest.raises(ApiError) as refused:  # the account password is required
        customer.post(f"/api/v1/environments/{veid}/reinstall/",
                      {"root_password": "fresh-root-pass", "current_password": "guess"})
    assert refused.value.status == 403
    op = customer.post(f"/api/v1/environments/{veid}/reinstall/", {
        "root_password": "fresh-root-pass", "keep_old": True,
        "current_password": live_stack.credentials()["demo"]})
    op = customer.wait_operation(op)
    assert op["state"] == "succeeded", op
    assert engine.status(veid).state == "running"
    assert engine.exec(veid, ["ls", "/root/old-data"]).returncode != 0
    assert engine.exec(veid, ["ls", "/old-root/root/old-data"]).returncode == 0  # kept
    assert engine.exec(veid, ["cat", "/etc/shadow"]).stdout != shadow
    assert customer.get(f"/api/v1/environments/{veid}/")["addresses"] == addresses
    # Without keep_old nothing of the old system stays.
    op = customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/reinstall/", {
        "current_password": live_stack.credentials()["demo"]}))
    assert op["state"] == "succeeded", op
    assert engine.exec(veid, ["ls", "/old-root"]).returncode != 0
    customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))


def test_only_the_nodes_worker_and_watcher_run_as_root(live_stack):
    import pwd
    unprivileged = pwd.getpwnam("hosting").pw_uid

    def uids(name):
        pid = live_stack.stack.processes[name].pid
        with open(f"/proc/{pid}/status") as status:
            line = next(entry for entry in status if entry.startswith("Uid:"))
        return set(map(int, line.split()[1:]))

    assert uids("web") == {unprivileged}
    assert uids("housekeeping") == {unprivileged}
    assert uids("node-worker") == {0}
    assert uids("node-watcher") == {0}  # the engine's, for reboots from inside and sysinfo


def test_concurrent_orders_never_share_an_address(live_stack):
    from concurrent.futures import ThreadPoolExecutor
    customer = live_stack.api("demo")
    with ThreadPoolExecutor(8) as pool:
        ops = list(pool.map(lambda i: order(live_stack.api("demo"), f"e2e-many{i}.example.com"),
                            range(8)))
    finals = [customer.wait_operation(op, timeout=180) for op in ops]
    assert all(f["state"] == "succeeded" for f in finals), \
        ([(f["veid"], f["state"], f["error"]) for f in finals], live_stack.logs("node-worker"))
    addresses = [a for f in finals
                 for a in customer.get(f"/api/v1/environments/{f['veid']}/")["addresses"]]
    assert len(addresses) == 16 and len(set(addresses)) == 16
    on_node = {v["veid"]: v["ips"] for v in live_stack.vectl_json("list")}
    assert sorted(a for f in finals for a in on_node[f["veid"]]) == sorted(addresses)
    for f in finals:
        customer.post(f"/api/v1/environments/{f['veid']}/terminate/")
    for f in finals:
        _wait_idle(customer, f["veid"], timeout=60)


def test_staff_add_and_remove_an_address_live(live_stack):
    staff, customer = live_stack.api("admin"), live_stack.api("demo")
    veid = customer.wait_operation(order(customer, "e2e-addr.example.com"))["veid"]
    with pytest.raises(ApiError) as refused:  # customers cannot
        customer.post(f"/api/v1/environments/{veid}/addresses/", {"version": 4})
    assert refused.value.status == 403
    op = staff.wait_operation(staff.post(f"/api/v1/environments/{veid}/addresses/",
                                         {"version": 4}))
    assert op["state"] == "succeeded", op
    addresses = customer.get(f"/api/v1/environments/{veid}/")["addresses"]
    assert len(addresses) == 3
    added = [a for a in addresses if "." in a][-1]
    assert added in live_stack.vectl_json("status", veid)["ips"]
    assert live_stack.in_node_netns("busybox", "ping", "-c", "1", "-W", "2",
                                    added).returncode == 0
    op = staff.wait_operation(staff.call("DELETE", f"/api/v1/environments/{veid}/addresses/"
                                                   f"{added}/")[1])
    assert op["state"] == "succeeded", op
    assert added not in live_stack.vectl_json("status", veid)["ips"]
    assert live_stack.in_node_netns("busybox", "ping", "-c", "1", "-W", "1",
                                    added).returncode != 0
    customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))


def _history(api, veid):
    return api.get(f"/api/v1/operations/?environment__veid={veid}")["results"]


def _wait(predicate, timeout, logs):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, logs()
        time.sleep(0.3)


def test_poweroff_inside_is_followed_and_a_node_boot_starts_what_should_run(live_stack):
    customer = live_stack.api("demo")
    veid = customer.wait_operation(order(customer, "e2e-inside.example.com"))["veid"]
    logs = lambda: live_stack.logs("node-worker") + live_stack.logs("node-watcher")
    # The customer powers the VPS off over SSH (here: vectl exec on the node).
    assert live_stack.vectl("exec", veid, "poweroff").returncode == 0

    def followed():
        ve = customer.get(f"/api/v1/environments/{veid}/")
        return (ve["actual_state"], ve["desired_state"]) == ("stopped", "stopped")
    _wait(followed, 30, logs)
    (poweroff,) = [op for op in _history(customer, veid) if op["kind"] == "poweroff"]
    assert poweroff["message"] == "powered off from inside" and poweroff["state"] == "succeeded"
    # The event is recorded when the VE's reboot(2) is seen, a moment before its init ends.
    _wait(lambda: live_stack.vectl_json("status", veid)["state"] == "stopped", 10, logs)

    op = customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/start/"))
    assert op["state"] == "succeeded", op
    # The node goes down hard and comes back: nothing runs, its worker starts anew.
    live_stack.kill_node_worker()
    assert live_stack.vectl("stop", veid, "--fast").returncode == 0
    live_stack.stack.manage("shell", "-c", "from hosting.nodes.models import Node; "
                            "Node.objects.update(boot_id='an-earlier-boot')", user="hosting")
    live_stack.restart_node_worker()
    _wait(lambda: live_stack.vectl_json("status", veid)["state"] == "running", 60, logs)
    _wait(lambda: customer.get(f"/api/v1/environments/{veid}/")["actual_state"] == "running",
          30, logs)
    customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))

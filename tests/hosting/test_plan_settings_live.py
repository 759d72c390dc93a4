"""Issue 14's plan settings on the whole product: the seccomp relaxation reaches the
engine and the VE's filter; the conntrack figures reach the usage API.

Over HTTP, Redis and the node's root worker (tests/livestack.py); the node is
checked with its conf file, vectl and raw system calls made inside the VE by
the static probe of the security tests (tests/security/escape_probe.c).
"""

import errno
import time

import pytest

from tests.livestack import ApiError
from tests.security.conftest import probe_binary  # noqa: F401  (fixture)
from tests.security.test_catalogue import sys_calls
from tests.security.test_escape import install_probe

KEYCTL = "250:0:-3:0"  # keyctl(KEYCTL_GET_KEYRING_ID, thread keyring, 0): 0 when allowed
IO_URING = "425:0:0"  # io_uring_setup(0, NULL): EFAULT when allowed (the kernel read NULL)


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value


def _order(live_stack, plan, hostname):
    customer = live_stack.api("demo")
    op = customer.wait_operation(customer.post("/api/v1/environments/", {
        "plan": plan, "template": "busybox", "hostname": hostname,
        "root_password": "live-pass-123"}), timeout=180)
    assert op["state"] == "succeeded", (op, live_stack.logs("node-worker"))
    return op["veid"]


def test_the_seccomp_relaxation_reaches_the_ves_filter(live_stack, probe_binary):  # noqa: F811
    staff, customer = live_stack.api("admin"), live_stack.api("demo")
    staff.post("/api/v1/plans/", {"name": "Live seccomp", "ram_mb": 128, "disk_gib": 2,
                                  "seccomp_allow": ["io_uring"], "monthly_price": "1.00"},
               expect=201)
    veid = _order(live_stack, "Live seccomp", "seccomp-live.example.com")
    engine, conf = live_stack.engine(), live_stack.ve_root / "conf" / f"{veid}.conf"
    # The plan's value came with the create.
    assert 'SECCOMP_ALLOW="io_uring_enter io_uring_register io_uring_setup"' in conf.read_text()
    install_probe(engine, veid, probe_binary)
    assert sys_calls(engine, veid, "64", [KEYCTL, IO_URING]) == {
        250: errno.ENOSYS, 425: errno.EFAULT}

    # The customer may not touch (or see) it; nothing is queued.
    for method in ("GET", "POST"):
        with pytest.raises(ApiError) as refused:
            customer.call(method, f"/api/v1/environments/{veid}/seccomp/",
                          {"seccomp_allow": ["keyring"]} if method == "POST" else None)
        assert refused.value.status == 403
    with pytest.raises(ApiError) as bad:
        staff.post(f"/api/v1/environments/{veid}/seccomp/", {"seccomp_allow": ["kexec_load"]})
    assert bad.value.status == 400 and "harms the host" in bad.value.body

    # The override without a reboot: saved on the node, the running VE keeps its filter.
    init = live_stack.vectl_json("status", veid)["init_pid"]
    done = staff.wait_operation(staff.post(f"/api/v1/environments/{veid}/seccomp/",
                                           {"seccomp_allow": ["keyring"]}))
    assert done["state"] == "succeeded", (done, live_stack.logs("node-worker"))
    assert done["message"] == "done; the change takes effect at the next reboot"
    assert 'SECCOMP_ALLOW="add_key keyctl request_key"' in conf.read_text()
    assert live_stack.vectl_json("status", veid)["init_pid"] == init

    # With a reboot: a new init, and inside the VE keyctl runs while io_uring is denied.
    done = staff.wait_operation(staff.post(f"/api/v1/environments/{veid}/seccomp/",
                                           {"seccomp_allow": ["keyring"], "reboot": True}))
    assert done["state"] == "succeeded", (done, live_stack.logs("node-worker"))
    assert live_stack.vectl_json("status", veid)["init_pid"] != init
    assert sys_calls(engine, veid, "64", [KEYCTL, IO_URING]) == {250: 0, 425: errno.ENOSYS}
    assert staff.get(f"/api/v1/environments/{veid}/seccomp/") == {
        "override": ["keyring"], "plan": ["io_uring"], "effective": ["keyring"]}
    audit = staff.get(f"/api/v1/audit-log/?action=ve.seccomp&object_id={veid}")["results"]
    assert [a["detail"]["override"] for a in audit] == ["keyring", "keyring"]
    customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))


LIMIT, FLOWS = 20, 60
GATEWAY = "198.18.0.1"  # seed_demo's pool gateway, on the node's network namespace


def test_conntrack_figures_reach_the_usage_api(live_stack):
    staff, customer = live_stack.api("admin"), live_stack.api("demo")
    staff.post("/api/v1/plans/", {"name": "Live conntrack", "ram_mb": 128, "disk_gib": 2,
                                  "processes": 1024, "connections": LIMIT,
                                  "monthly_price": "1.00"}, expect=201)
    veid = _order(live_stack, "Live conntrack", "conntrack-live.example.com")
    usage = f"/api/v1/environments/{veid}/usage/?range=1h"
    # A sample before the flood, so the graph's refusals have an interval to count in.
    _wait(lambda: customer.get(usage)["connections"]["held"] is not None, 30,
          "a first conntrack sample (0 held)")
    # One ICMP flow per ping process (each has its own id), as the engine's own test
    # makes them (tests/engine/test_abuse_conntrack.py): no listener needed, and each
    # entry lives 30 s, long enough for a sample (HOSTING_SAMPLE_SECONDS=2) to see it.
    script = (f"i=0; while [ $i -lt {FLOWS} ]; do ping -c 1 -W 1 {GATEWAY} >/dev/null & "
              "i=$((i+1)); done; wait")
    assert live_stack.engine().exec(veid, ["sh", "-c", script]).returncode in (0, 1)

    def figures():
        now = customer.get(usage)["connections"]
        return now if now["held"] and now["refused"] else None

    now = _wait(figures, 30, "conntrack figures in the usage API")
    assert now["limit"] == LIMIT and 0 < now["held"] <= LIMIT
    assert now["refused"] >= FLOWS - LIMIT  # each refused ping is one dropped packet
    graph = staff.get(usage)
    assert graph["limits"]["conntrack"] == LIMIT
    assert any(v for v in graph["conntrack"] if v)  # the graph's series
    assert any(v for v in graph["conntrack_refused"] if v)
    customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"))

"""Dashboard operations on a VPS whose root replaced every program in it.

The node worker never runs a program of the VE: password, SSH key, address
and limit changes, reboot and reinstall all finish in bounded time (the
reboot waits for its stop timeout), and the worker's memory stays flat while
the VE's binaries flood their output or never exit.
"""

import time

import pytest

from hosting.environments import services
from hosting.operations import executor, runners, services as operations
from hosting.operations.models import Operation
from tests.security.test_hostile_ve import HOSTILE, hostile_binaries, replace_every_program  # noqa: F401
from tests.staffing import make_staff

pytestmark = pytest.mark.django_db
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileOperationKey ops@test"


def peak_rss_growth_mib(baseline):
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmHWM"].split()[0]) / 1024 - baseline


def reset_peak_rss():
    """Make VmHWM start again from the current RSS; return that RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) / 1024


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_operations_end_in_time_with_flat_memory(catalogue, engine, node_run_dir,
                                                  hostile_binaries, monkeypatch, kind):
    monkeypatch.setattr(runners, "STOP_TIMEOUT", 3.0)
    user = catalogue["user"]
    staff = make_staff("support", password="support-pass-1")
    op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                        "hostile.example.com", user, root_password="root-pass-123",
                        ssh_key=KEY)
    executor.execute(op.pk, engine)
    ve = Operation.objects.get(pk=op.pk).environment
    replace_every_program(engine, ve.veid, hostile_binaries[kind])

    requests = [
        lambda: services.reset_password(ve, user, "new-root-pass-1"),
        lambda: services.add_address(ve, staff, version=6),
        lambda: operations.request(ve, Operation.Kind.RESTART, user),
        lambda: services.reset_password(ve, user, "new-root-pass-2"),  # hostile init now
        lambda: services.reinstall(ve, user, root_password="new-root-pass-3", ssh_key=KEY),
        lambda: operations.request(ve, Operation.Kind.STOP, user),
        lambda: operations.request(ve, Operation.Kind.DESTROY, user),
    ]
    baseline = reset_peak_rss()
    for make_request in requests:
        ve.refresh_from_db()
        op = make_request()
        started = time.monotonic()
        executor.execute(op.pk, engine)
        op.refresh_from_db()
        assert op.state == "succeeded", (op.kind, op.error)
        assert time.monotonic() - started < 20, op.kind
    assert peak_rss_growth_mib(baseline) < 100
    assert engine.layout.veids() == []

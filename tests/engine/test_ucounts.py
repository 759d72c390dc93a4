"""inotify caps: a VE's use counts against host root's too (user namespaces charge up
their chain), so the node's caps are raised and each VE gets its own."""

from ve.config import Limits, VEConfig
from ve.kernel import ucounts

VEID = 431


def read(path):
    with open(f"/proc/sys/{path}") as f:
        return int(f.read())


def test_a_started_ve_has_its_own_inotify_caps_and_the_node_room_for_many(engine):
    engine.create(VEConfig(VEID, "caps", "busybox", Limits()))
    engine.start(VEID)
    for path, wanted in ucounts.NODE_CAPS.items():
        assert read(path) >= wanted
    inside = engine.exec(VEID, ["cat", "/proc/sys/user/max_inotify_instances",
                                "/proc/sys/user/max_inotify_watches"])
    assert inside.stdout.split() == [str(v).encode() for v in ucounts.VE_CAPS.values()]
    # VE root cannot lift its own (its /proc/sys is read-only).
    lift = engine.exec(VEID, ["sh", "-c", "echo 99999 > /proc/sys/user/max_inotify_instances"])
    assert lift.returncode != 0 and b"Read-only" in lift.stderr

"""A VE whose memory fills keeps its init; if the OOM killer takes init anyway,
the node watcher starts the VE again (issue 14).

Memory held by a tmpfs belongs to no process: the OOM killer then picks among
tiny processes, and before init got the lowest score it picked init (the
largest of them), which ended the whole VE.
"""

import os

from ve import Limits, VEConfig
from ve.engine.initguard import INIT_OOM_SCORE_ADJ

from .conftest import wait_for
from .test_watcher import WatcherProcess, events_of, new_init

MiB = 1 << 20
SMALL = dict(ram=64 * MiB, swap=0, diskspace=128 * MiB, diskinodes=16384)
FILL_TMPFS = "cat /dev/zero > /dev/hog"  # /dev is the VE's own tmpfs


def host_may_lower_scores():
    """CAP_SYS_RESOURCE (this sandbox's root lacks it in its bounding set)."""
    with open("/proc/self/status") as f:
        effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff"))
    return bool(effective & (1 << 24))


def make(engine, veid=101):
    engine.create(VEConfig(veid, f"m{veid}.example", "busybox", Limits(**SMALL)))
    return engine.start(veid)


def test_a_ve_whose_memory_fills_keeps_its_init(engine, monkeypatch):
    monkeypatch.setenv("VE_WATCH", "off")
    init = make(engine)
    with open(f"/proc/{init}/oom_score_adj") as f:
        floor = int(f.read())
    assert floor == (INIT_OOM_SCORE_ADJ if host_may_lower_scores() else 0)
    # Nothing in the VE may go below init's score (that needs host privileges).
    lower = engine.exec(101, ["sh", "-c", f"echo {floor - 1} > /proc/self/oom_score_adj"])
    assert lower.returncode != 0
    result = engine.exec(101, ["sh", "-c", FILL_TMPFS])
    assert result.returncode == 137, result  # the filler (or its shell) was OOM-killed
    status = engine.status(101)
    assert status.oom_kills >= 1
    assert (status.state, status.init_pid) == ("running", init), "the OOM killer took init"
    # The tmpfs keeps the memory full: init lives on regardless.
    assert os.path.exists(f"/proc/{init}") and engine.status(101).init_pid == init


def test_a_ve_whose_init_the_oom_killer_took_anyway_starts_again(engine, monkeypatch):
    monkeypatch.setenv("VE_WATCH", "on")
    watcher = WatcherProcess(engine)
    try:
        old = make(engine)
        with open(f"/proc/{old}/oom_score_adj", "w") as f:
            f.write("1000")  # the host makes init the first choice, as an unlucky VE would
        engine.exec(101, ["sh", "-c", FILL_TMPFS])
        pid = new_init(engine, 101, old)
        assert pid, watcher.output()
        assert wait_for(lambda: events_of(engine, 101), 10)
        (event,) = events_of(engine, 101)
        assert (event["reason"], event["restarted"], event["new_pid"]) == ("oom", True, pid)
        assert engine.exec(101, ["ls", "/dev/hog"]).returncode != 0  # the new run's own /dev
        assert os.path.exists(f"/proc/{pid}")
    finally:
        watcher.stop()

"""`vectl pid` names the VE of any of its processes: under another node's cgroup parent,
inside nested namespaces, and a VE init that died but is not reaped yet (a zombie,
which the kernel already shows in the root cgroups)."""

import ctypes
import os
import signal
import subprocess
import sys

import pytest

from ve import VEConfig

from .conftest import ROOT_DIR, wait_for

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def other_node_pid(tmp_path, *pids):
    """`vectl pid` as another node on this machine sees it: its own VE_ROOT and cgroup
    parent, none of this VE's files. Return {pid: veid}."""
    env = dict(os.environ, VE_ROOT=str(tmp_path / "other-node"),
               VE_CGROUP_PARENT="vetest-other-node/ve", PYTHONPATH=str(ROOT_DIR))
    out = subprocess.run([sys.executable, "-m", "ve.cli", "pid", *map(str, pids)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {int(line.split()[0]): int(line.split()[1]) for line in out.stdout.splitlines()[1:]}


@pytest.mark.parametrize("privileged", [False, True])
def test_pid_names_the_ve_under_any_cgroup_parent(engine, tmp_path, privileged):
    engine.create(VEConfig(101, "web1", "busybox", privileged=privileged))
    init = engine.start(101)
    assert wait_for(lambda: engine.status(101).nproc == 1)
    engine.exec(101, ["sh", "-c", "unshare -U -p -f sleep 60 >/dev/null 2>&1 &"
                      " sleep 60 >/dev/null 2>&1 &"])
    assert wait_for(lambda: len(engine.cgroups.pids("101")) >= 3)
    members = engine.cgroups.pids("101")
    found = other_node_pid(tmp_path, os.getpid(), *members)
    assert found == {os.getpid(): 0, **{pid: 101 for pid in members}}
    assert {o.pid: o.veid for o in engine.pid([init, os.getpid()])} == {init: 101,
                                                                          os.getpid(): 0}


@pytest.fixture
def subreaper():
    """The test process adopts orphans (as a host init would), and reaps them after."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


@pytest.mark.parametrize("privileged", [False, True])
def test_pid_names_the_ve_of_an_init_not_yet_reaped(engine, tmp_path, subreaper, privileged):
    engine.create(VEConfig(101, "web1", "busybox", privileged=privileged))
    init = engine.start(101)
    assert os.getppid() != init and _parent(init) == os.getpid()  # adopted by the test
    os.kill(init, signal.SIGKILL)
    assert wait_for(lambda: _state(init) == "Z")
    assert {o.pid: o.veid for o in engine.pid([init])} == {init: 101}
    if not privileged:  # another node has no run file of it: the uid map tells
        assert other_node_pid(tmp_path, init) == {init: 101}
    os.waitpid(init, 0)
    assert engine.pid([init])[0].veid is None


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _state(pid):
    return _stat(pid)[0]


def _parent(pid):
    return int(_stat(pid)[1])

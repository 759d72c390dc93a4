"""The supervisor of ``manage.py runstack``: a process that dies comes back, with back-off.

Real processes in a Stack (its spawning, sessions and logs), a fake clock
for the back-off arithmetic. tests/hosting/test_outages_live.py checks the same
supervisor bringing back a killed Redis and node worker of the real product.
"""

import os
import signal
import time

import pytest

from hosting.stack import Stack, wait_until
from hosting.supervisor import Supervisor


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path / "data", web_user=None, log_dir=tmp_path / "log")
    (tmp_path / "data").mkdir()
    yield stack
    stack.stop(timeout=5)


def crash(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_dead_process_is_restarted_with_back_off_until_it_runs_well(stack):
    clock, lines = Clock(), []
    supervisor = Supervisor(stack, log=lines.append, clock=clock, healthy_after=60)
    first = stack._spawn("sleeper", ["sleep", "600"])
    stack.started_at["sleeper"] = clock.now
    delays = []
    for _ in range(7):  # it keeps dying at once: 1, 2, 4, 8, 16, 30, 30 s
        crash(stack.processes["sleeper"])
        assert supervisor.check() == []
        delays.append(supervisor.due["sleeper"] - clock.now)
        clock.now += delays[-1] - 0.01
        assert supervisor.check() == []  # not before its time
        clock.now += 0.01
        assert supervisor.check() == ["sleeper"]
        stack.started_at["sleeper"] = clock.now
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert stack.processes["sleeper"].poll() is None and stack.processes["sleeper"] is not first
    clock.now += 61  # a good run: the next restart is quick again
    crash(stack.processes["sleeper"])
    supervisor.check()
    assert supervisor.due["sleeper"] - clock.now == 1
    assert supervisor.restarts["sleeper"] == 7
    assert any("sleeper" in line and "exited with status -9" in line for line in lines)


def test_the_rest_of_a_dead_masters_session_is_killed_before_the_restart(stack, tmp_path):
    # A master with a child (like Celery's pool or gunicorn's workers) is SIGKILLed.
    pidfile = tmp_path / "child.pid"
    stack._spawn("master", ["sh", "-c", f"sleep 600 & echo $! > {pidfile}; wait"])
    wait_until(lambda: pidfile.read_text().strip(), 10, "the child did not start")
    child = int(pidfile.read_text())
    supervisor = Supervisor(stack, log=lambda line: None, first_delay=0.1)
    crash(stack.processes["master"])
    supervisor.check()
    wait_until(lambda: not os.path.exists(f"/proc/{child}") or
               open(f"/proc/{child}/stat").read().split()[2] == "Z", 10,
               "the dead master's child lives on")
    time.sleep(0.15)
    assert supervisor.check() == ["master"]
    assert stack.processes["master"].poll() is None


def test_the_supervisor_thread_restarts_within_its_first_delay(stack):
    supervisor = Supervisor(stack, log=lambda line: None)
    stack._spawn("sleeper", ["sleep", "600"])
    stop = supervisor.start(interval=0.05)
    try:
        dead = stack.processes["sleeper"]
        killed = time.monotonic()
        os.kill(dead.pid, signal.SIGKILL)
        wait_until(lambda: stack.processes["sleeper"] is not dead, 5, "not restarted")
        assert 0.9 < time.monotonic() - killed < 2.0
        assert stack.processes["sleeper"].poll() is None
    finally:
        stop.set()

"""Keep a Stack's processes running: restart the one that died, with back-off.

``manage.py runstack`` calls ``check()`` twice a second. A process that dies
is restarted after 1 s, then after 2, 4, 8 ... up to 30 s while it keeps
dying soon after its start; once it has run for ``healthy_after`` seconds its
next restart is quick again. In production systemd does this job
(``Restart=always``, see docs/systemd/).
"""

import threading
import time


class Supervisor:
    """Restarts the dead processes of ``stack`` (a ``hosting.stack.Stack``)."""

    def __init__(self, stack, log=print, first_delay=1.0, max_delay=30.0, healthy_after=60.0,
                 clock=time.monotonic):
        self.stack, self.log, self.clock = stack, log, clock
        self.first_delay, self.max_delay, self.healthy_after = \
            first_delay, max_delay, healthy_after
        self.delays = {}  # name -> the delay of its last restart
        self.due = {}  # name -> when it is restarted
        self.restarts = {}  # name -> how many times it was restarted

    def check(self):
        """One look at the processes: schedule the dead ones, restart those due.
        Returns the names restarted now."""
        now = self.clock()
        for name, proc in list(self.stack.processes.items()):
            if name in self.due or proc.poll() is None:
                continue
            if self.stack.watcher_took_over(name):
                self.stack.processes.pop(name)  # its twin took over: the VEs are watched
                self.log(f"{name} exited; its twin serves the node on")
                continue
            ran = now - self.stack.started_at.get(name, now)
            previous = self.delays.get(name)
            delay = self.first_delay if previous is None or ran >= self.healthy_after \
                else min(self.max_delay, previous * 2)
            self.delays[name], self.due[name] = delay, now + delay
            self.log(f"{name} (PID {proc.pid}) exited with status {proc.returncode} after "
                     f"{ran:.1f} s; restarting it in {delay:g} s")
            self.stack.reap(name)
        restarted = []
        for name, when in sorted(self.due.items(), key=lambda item: item[1]):
            if when > now:
                continue
            del self.due[name]
            proc = self.stack.restart(name)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.log(f"{name} restarted (PID {proc.pid})")
            restarted.append(name)
        return restarted

    def run(self, stop, interval=0.2):
        """``check()`` every ``interval`` seconds until the ``stop`` event is set."""
        while not stop.wait(interval):
            try:
                self.check()
            except Exception as exc:  # e.g. a restart that failed: tried again next time
                self.log(f"supervisor: {exc}")

    def start(self, interval=0.2):
        """Run in a daemon thread; returns the event that stops it."""
        stop = threading.Event()
        threading.Thread(target=self.run, args=(stop, interval), name="supervisor",
                         daemon=True).start()
        return stop

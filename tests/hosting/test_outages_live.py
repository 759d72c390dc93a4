"""Operations survive crashes of the node worker, Redis and the web, and a frozen Redis.

A stack of its own (tests/livestack.py) with the supervisor of ``manage.py
runstack`` restarting what dies. While customers keep stopping and starting
their VPSes, the node worker, redis-server and a gunicorn worker are killed
with SIGKILL. Every operation must finish, none may wait longer than the
outage it met plus a few seconds, none may run twice, and the portal must
answer all along.
"""

import threading
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest

from hosting.stack import wait_until
from tests.livestack import ApiError

SLACK = 5.0  # seconds an operation may wait beyond an outage
# As many VPSes as the node runs operations at once, one operation each at a time:
# an operation waits only for an outage, never behind another.
VPSES = 4


@pytest.fixture(scope="module")
def stack():
    import os
    import shutil
    if os.geteuid() != 0 or not shutil.which("redis-server"):
        pytest.skip("needs root and redis-server")
    from tests.livestack import LiveStack, new_cgroup_top
    live = LiveStack(new_cgroup_top(), ops_concurrency=VPSES)
    try:
        live.start()
        live.supervise()
        yield live
    except Exception:
        print(live.logs())
        raise
    finally:
        live.stop()


def epoch(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Portal(threading.Thread):
    """Asks for the login page and the API's VPS list every 0.1 s; records the answers."""

    def __init__(self, live):
        super().__init__(daemon=True)
        self.live, self.answers, self.done = live, [], threading.Event()
        self.token = live.api("demo").token

    def run(self):
        while not self.done.wait(0.1):
            for path, headers in (("/login/", {}),
                                  ("/api/v1/environments/",
                                   {"Authorization": f"Token {self.token}"})):
                request = urllib.request.Request(self.live.base + path, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        status = response.status
                except urllib.error.HTTPError as exc:
                    status = exc.code
                except OSError as exc:  # reset, refused
                    status = repr(exc)
                self.answers.append((time.time(), path, status))

    def longest_gap(self):
        """The longest time without a 200 from each path."""
        worst = 0.0
        for path in {p for _, p, _ in self.answers}:
            times = [t for t, p, s in self.answers if p == path and s == 200]
            worst = max([worst] + [b - a for a, b in zip(times, times[1:])])
        return worst


class Load(threading.Thread):
    """A customer stopping and starting VPSes in turn, one operation at a time each."""

    def __init__(self, live, veids):
        super().__init__(daemon=True)
        self.live, self.veids, self.done = live, veids, threading.Event()
        self.requested, self.answer_times, self.errors = [], [], []

    def run(self):
        api = self.live.api("demo")
        pending = {}
        action = dict.fromkeys(self.veids, "stop")
        while not self.done.is_set() or pending:
            for veid in self.veids:
                op = pending.get(veid)
                if op:
                    try:
                        state = api.get(f"/api/v1/operations/{op}/")["state"]
                    except OSError:  # a web worker killed under us: ask again
                        continue
                    if state not in ("succeeded", "failed"):
                        continue
                    del pending[veid]
                if self.done.is_set():
                    continue
                pending[veid] = self.request(api, veid, action[veid])
                action[veid] = "start" if action[veid] == "stop" else "stop"
            time.sleep(0.3)

    def request(self, api, veid, action):
        """POST the action; after a broken connection (a web worker killed under us)
        look whether it arrived before asking again."""
        for _ in range(5):
            began = time.monotonic()
            try:
                op = api.post(f"/api/v1/environments/{veid}/{action}/")
                self.answer_times.append(time.monotonic() - began)
                self.requested.append(op["id"])
                return op["id"]
            except (OSError, ApiError) as exc:
                self.errors.append(f"{action} {veid}: {exc!r}")
                time.sleep(0.3)
                mine = api.get(f"/api/v1/operations/?environment__veid={veid}&kind={action}")
                fresh = [o for o in mine["results"] if o["id"] not in self.requested
                         and o["state"] in ("queued", "running")]
                if fresh:
                    self.requested.append(fresh[0]["id"])
                    return fresh[0]["id"]
        raise AssertionError(f"{action} of VE {veid} never accepted: {self.errors}")


def deadline(created, outages):
    """When an operation created at ``created`` must have started at the latest."""
    latest = created + SLACK
    for start, end in sorted(outages):
        if start <= latest:
            latest = max(latest, end + SLACK)
    return latest


def test_crashes_during_a_load_of_operations(stack):
    live, customer = stack, stack.api("demo")
    orders = [customer.post("/api/v1/environments/", {
        "plan": "VPS S", "template": "busybox", "hostname": f"outage{i}.example.com",
        "root_password": "correct-horse-1"}) for i in range(VPSES)]
    veids = [customer.wait_operation(op, timeout=120)["veid"] for op in orders]
    portal, load = Portal(live), Load(live, veids)
    portal.start()
    load.start()
    outages = []
    try:
        time.sleep(4)
        # 1. The node's operations worker dies, pool and all, mid-operation.
        killed, ready_lines = time.time(), _full_log(live, "node-worker").count(" ready.")
        live.crash("node-worker")
        wait_until(lambda: _full_log(live, "node-worker").count(" ready.") > ready_lines, 60,
                   "the node worker did not come back")
        outages.append((killed, time.time()))
        time.sleep(5)
        # 2. redis-server dies; the supervisor starts it again on its append-only file.
        killed = time.time()
        live.crash("redis")
        wait_until(lambda: live.stack.processes["redis"].poll() is None and
                   _redis_up(live), 30, "redis did not come back")
        outages.append((killed, time.time()))
        time.sleep(5)
        # 3. One of gunicorn's workers dies; its master starts another.
        victim = live.web_workers()[0]
        import os
        import signal
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(live.web_workers()) == 2 and victim not in live.web_workers(),
                   30, "gunicorn did not replace its worker")
        time.sleep(5)
    finally:
        load.done.set()
        load.join(180)
        portal.done.set()
        portal.join(10)
    assert not load.is_alive(), "the load did not finish"

    staff = live.api("admin")
    ops = [staff.get(f"/api/v1/operations/{op_id}/") for op_id in load.requested]
    report = [(o["kind"], o["veid"], o["state"], o["attempts"], o["created"], o["started"],
               o["finished"]) for o in ops]
    assert len(ops) >= 15, report
    assert all(o["state"] == "succeeded" for o in ops), (report, live.logs())
    late = [(o["id"], round(epoch(o["started"]) - deadline(epoch(o["created"]), outages), 1))
            for o in ops if epoch(o["started"]) > deadline(epoch(o["created"]), outages)]
    assert not late, (late, outages, report)
    # Each ran once; only those the killed worker was running ran a second time.
    assert all(o["attempts"] == 1 for o in ops if epoch(o["created"]) > outages[0][1]), report
    assert sum(o["attempts"] - 1 for o in ops) <= VPSES, report
    log = _full_log(live, "node-worker")  # interrupted ones, too, ran in the operations pool
    for o in ops:
        assert log.count(f"operation {o['id']}: {o['kind']}") == o["attempts"], o
    # Nothing more than what the customer asked for happened to the VPSes.
    for veid in veids:
        history = staff.get(f"/api/v1/operations/?environment__veid={veid}")["results"]
        assert sorted(o["id"] for o in history if o["kind"] in ("stop", "start")) == \
            sorted(o["id"] for o in ops if o["veid"] == veid)
    # Requests were answered quickly, and the portal all along.
    assert max(load.answer_times) < 2.0, sorted(load.answer_times)[-5:]
    assert portal.longest_gap() < 2.5, [a for a in portal.answers if a[2] != 200]
    # Only operations that met an outage were sent again by the relay.
    assert log.count("has no message in") <= sum(epoch(o["created"]) < outages[-1][1]
                                                  for o in ops), log
    assert len(portal.answers) > 100
    redis_down, redis_back = outages[1]
    after_redis = [epoch(o["started"]) - redis_back for o in ops
                   if epoch(o["created"]) < redis_back and epoch(o["started"]) > redis_down]
    print(f"\noperations that met the Redis outage started at most "
          f"{max(after_redis, default=0):.2f} s after Redis was back ({len(after_redis)} of them)")
    print(f"{len(ops)} operations; queue waits (s): "
          f"{sorted(round(epoch(o['started']) - epoch(o['created']), 2) for o in ops)}; "
          f"outages: {[(round(e - s, 1)) for s, e in outages]}; "
          f"longest portal gap {portal.longest_gap():.2f} s; web answer max "
          f"{max(load.answer_times):.2f} s; supervisor: {live.supervisor.restarts}")
    for veid in veids:
        customer.wait_operation(customer.post(f"/api/v1/environments/{veid}/terminate/"),
                                timeout=60)


def test_a_frozen_redis_does_not_hold_up_an_order(stack):
    customer = stack.api("demo")
    stack.freeze_redis()
    try:
        began = time.monotonic()
        op = customer.post("/api/v1/environments/", {
            "plan": "VPS S", "template": "busybox", "hostname": "frozen.example.com",
            "root_password": "correct-horse-1"})
        answered = time.monotonic() - began
        assert customer.get(f"/api/v1/operations/{op['id']}/")["state"] == "queued"
        # The re-authentication counters live in the cache (Redis): a wrong password
        # is still told apart from a server error while Redis is frozen.
        began = time.monotonic()
        with pytest.raises(ApiError) as refused:
            customer.post(f"/api/v1/environments/{op['veid']}/password/",
                          {"root_password": "another-horse-2", "current_password": "wrong"})
        reauth_answered = time.monotonic() - began
        assert refused.value.status == 403, refused.value
        time.sleep(3)
    finally:
        stack.thaw_redis()
    thawed = time.time()
    final = customer.wait_operation(op, timeout=60)
    assert final["state"] == "succeeded", (final, stack.logs())
    resumed = epoch(final["started"]) - thawed
    print(f"\norder answered in {answered:.2f} s with Redis frozen (a wrong password "
          f"in {reauth_answered:.2f} s); started "
          f"{resumed:.1f} s after Redis was thawed")
    assert answered < 2.0 and reauth_answered < 2.5
    assert resumed < SLACK
    customer.wait_operation(customer.post(f"/api/v1/environments/{final['veid']}/terminate/"),
                            timeout=60)


def test_the_relay_sees_which_operations_have_a_message(stack):
    """relay.inflight reads kombu's messages in Redis (waiting and unacknowledged)."""
    import subprocess
    import sys
    probe = ("import django; django.setup()\n"
             "from hosting.celery import app\n"
             "from hosting.operations import dispatch, relay\n"
             "dispatch.publish(dispatch.RUN_OPERATION, ['11111111-1111-1111-1111-111111111111'],"
             " 'node.relaytest')\n"
             "dispatch.publish('hosting.usage.tasks.sample_node', ['22222222-2222-2222-2222-"
             "222222222222'], 'node.relaytest')\n"
             "ids = relay.inflight('node.relaytest')\n"
             "print('11111111-1111-1111-1111-111111111111' in ids, len(ids))\n"
             "print(relay.inflight('node.nosuchqueue'))\n")
    out = subprocess.run([sys.executable, "-c", probe], env=stack.stack.env(),
                         capture_output=True, text=True, timeout=60, cwd=stack.stack.env()
                         ["PYTHONPATH"])
    assert out.stdout.split("\n")[:2] == ["True 1", "set()"], out.stderr


def test_the_data_dir_is_private(stack):
    import os
    import stat
    data = stack.data_dir
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode)
             for p in [data, data / "db", data / "redis", data / "log",
                       *(data / "db").glob("hosting.sqlite3*")]}
    assert modes["db"] == 0o700 and modes["log"] == 0o700
    assert modes[data.name] & 0o007 == 0 and modes["redis"] & 0o007 == 0
    for name in ("hosting.sqlite3", "hosting.sqlite3-wal", "hosting.sqlite3-shm"):
        assert modes[name] == 0o600, modes


def _redis_up(live):
    from hosting.stack import _redis_ping
    try:
        return _redis_ping(live.stack.redis_client_url())
    except Exception:
        return False


def _full_log(live, name):
    return (live.data_dir / "log" / f"{name}.log").read_text()

"""The control plane assumes breach (docs/security.md), on the live stack.

Redis knows no anonymous user and gives each login only its own keys and
commands; a node's root worker runs only messages signed by a key it trusts:
a task pushed straight into its queue by someone who holds a Redis password,
unsigned or signed with a key of their own, is refused (and logged), never run.
"""

import json
import subprocess
import sys
import time
import uuid

import pytest
import redis

from hosting import controlplane
from tests.livestack import NODE, ROOT_DIR

# What someone who can write to Redis would do: publish with a Celery app of their
# own, unsigned or signed with their own key and certificate.
FORGER = """
import json, sys
from celery import Celery
url, queue, task, args, key_dir = sys.argv[1:6]
app = Celery("forger", broker=url)
if key_dir:
    app.conf.update(task_serializer="auth", accept_content=["auth"],
                    security_key=key_dir + "/forger.key",
                    security_certificate=key_dir + "/forger.pem",
                    security_cert_store=key_dir + "/forger.pem")
    app.setup_security(serializer="json")
with app.connection_for_write() as conn:
    print(app.send_task(task, args=json.loads(args), queue=queue, connection=conn).id)
"""


def client(live, role=None, password=None):
    url = live.stack.redis_client_url(role) if role else \
        live.stack.redis_url.replace("redis+socket://", "unix://")
    if password:
        url = url.replace("unix://", f"unix://{role}:{password}@")
    return redis.Redis.from_url(url, socket_timeout=5)


def forge(live, queue, task, args, key_dir=""):
    """Publish as the web side's Redis user (the most a stolen password gives)."""
    url = live.stack.redis_client_url("web").replace("unix://", "redis+socket://")
    out = subprocess.run([sys.executable, "-c", FORGER, url, queue, task, json.dumps(args),
                          str(key_dir)], capture_output=True, text=True, timeout=60,
                         cwd="/tmp")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def log_of(live, name):
    return (live.data_dir / "log" / f"{name}.log").read_text()


def wait_in_log(live, name, text, timeout=30):
    deadline = time.monotonic() + timeout
    while text not in log_of(live, name):
        assert time.monotonic() < deadline, (text, live.logs(name))
        time.sleep(0.2)


def test_redis_refuses_anonymous_and_wrong_logins(live_stack):
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(live_stack).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(live_stack, controlplane.WEB_USER, password="guessed").ping()
    assert client(live_stack, "web").ping() and client(live_stack, "node").ping()


def test_each_redis_login_has_only_its_own_keys_and_commands(live_stack):
    node, web = client(live_stack, "node"), client(live_stack, "web")
    node.llen(f"node.{NODE}")
    node.llen(f"node.{NODE}.chores")
    refused_to_node = {
        "another node's queue": lambda: node.lpush("node.other", "x"),
        "reading another node's queue": lambda: node.lrange("node.other", 0, -1),
        "another node's bindings": lambda: node.sadd("_kombu.binding.node.other", "x"),
        "the web side's unacknowledged messages": lambda: node.hvals("unacked"),
        "the housekeeping queue": lambda: node.lpush("hosting", "x"),
        "the cache": lambda: node.get("hosting:1:anything"),
        "pub/sub": lambda: node.publish("/0.celery.pidbox", "x"),
    }
    refused_to_all = {
        "flushall": lambda c: c.flushall(), "config": lambda c: c.config_get("*"),
        "keys": lambda c: c.keys("*"), "acl": lambda c: c.acl_list(),
        "script flush": lambda c: c.script_flush(), "save": lambda c: c.save(),
        "client kill": lambda c: c.client_kill_filter(skipme=True),
        "replicaof": lambda c: c.execute_command("REPLICAOF", "NO", "ONE"),
        "module": lambda c: c.execute_command("MODULE", "LIST"),
    }
    for what, call in refused_to_node.items():
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
            pytest.fail(f"a node may use {what}")
    for what, call in refused_to_all.items():
        for login in (node, web):
            with pytest.raises(redis.exceptions.NoPermissionError):
                call(login)
                pytest.fail(f"{what} allowed")


def test_a_node_refuses_forged_tasks(live_stack, tmp_path):
    """Unsigned, or signed with a key the node does not trust: refused and logged,
    never run. A message the web side signs, sent after them, is run."""
    controlplane.signing_pair(tmp_path, "forger")
    queue, task = f"node.{NODE}", "hosting.operations.tasks.run_operation"
    forged = {"unsigned": forge(live_stack, queue, task, [str(uuid.uuid4())]),
              "signed by another key": forge(live_stack, queue, task, [str(uuid.uuid4())],
                                             key_dir=tmp_path)}
    genuine = live_stack.send_task(task, [str(uuid.uuid4())], queue)
    wait_in_log(live_stack, "node-worker", f"run_operation[{genuine}] succeeded")
    log = log_of(live_stack, "node-worker")
    for what, task_id in forged.items():
        assert f"refused a message on {queue} (task {task}, id {task_id})" in log, (what, log)
        assert f"[{task_id}] received" not in log and f"[{task_id}] succeeded" not in log, what
    assert client(live_stack, "web").llen(queue) == 0  # taken off the queue, not retried


def test_the_relay_counts_only_signed_messages(live_stack, tmp_path):
    """relay.inflight decodes signed bodies; a forged message is no message (the
    relay sends the operation again rather than trusting it)."""
    controlplane.signing_pair(tmp_path, "forger")
    queue, task = "node.relayforged", "hosting.operations.tasks.run_operation"
    signed, unsigned, alien = (str(uuid.uuid4()) for _ in range(3))
    live_stack.send_task(task, [signed], queue)
    forge(live_stack, queue, task, [unsigned])
    forge(live_stack, queue, task, [alien], key_dir=tmp_path)
    probe = ("import django; django.setup()\n"
             "from hosting.operations import relay\n"
             f"print(sorted(relay.inflight({queue!r})))\n")
    out = subprocess.run([sys.executable, "-c", probe], env=live_stack.stack.env(),
                         capture_output=True, text=True, timeout=60, cwd=ROOT_DIR)
    assert out.stdout.strip() == str([signed]), out.stderr
    client(live_stack, "web").delete(queue)


def test_redis_listens_on_the_hosts_loopback_and_its_socket_only(live_stack):
    """No VE reaches either: a VE's 127.0.0.1 is its own loopback (its own network
    namespace), and the socket's path is not in its mount namespace."""
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True,
                               timeout=30).stdout
    pid = live_stack.pid("redis")
    mine = [line.split()[3] for line in listening.splitlines() if f"pid={pid}," in line]
    assert mine and all(address.startswith("127.0.0.1:") for address in mine), mine
    from tests.hosting.test_dispatch_live import order
    customer = live_stack.api("demo")
    op = customer.wait_operation(order(customer, "e2e-redis.example.com"))
    assert op["state"] == "succeeded", op
    engine, socket = live_stack.engine(), live_stack.stack.redis_url.split("://", 1)[1]
    try:
        assert engine.exec(op["veid"], ["test", "-e", socket]).returncode != 0
        probe = engine.exec(op["veid"], ["nc", "-w", "2", "127.0.0.1",
                                         str(live_stack.redis_port)], input=b"PING\r\n",
                            timeout=30)
        assert b"PONG" not in probe.stdout and b"NOAUTH" not in probe.stdout
        assert b"Connection refused" in probe.stdout + probe.stderr, probe  # nc ran
        assert client(live_stack, "web").ping()  # while the host reaches it
    finally:
        customer.wait_operation(customer.post(f"/api/v1/environments/{op['veid']}/terminate/"))

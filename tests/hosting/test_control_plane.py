"""The control plane's configuration, without a running stack (docs/security.md):
Redis users and their rules, how processes get their logins and keys, the units."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from hosting import controlplane as cp
from hosting.core.management.commands.systemd_units import render
from hosting.stack import BASE_DIR, Stack, wait_until


def settings_of(**env):
    """Some settings as a fresh process with ``env`` sees them."""
    probe = ("import json\nfrom django.conf import settings as s\n"
             "print(json.dumps({'broker': s.CELERY_BROKER_URL, 'signing': s.SIGNING,"
             " 'serializer': s.CELERY_TASK_SERIALIZER, 'accept': s.CELERY_ACCEPT_CONTENT,"
             " 'transport': s.CELERY_BROKER_TRANSPORT_OPTIONS,"
             " 'cache': s.CACHES['default']['BACKEND'],"
             " 'remote_control': s.CELERY_WORKER_ENABLE_REMOTE_CONTROL}))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOSTING_")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**clean, "DJANGO_SETTINGS_MODULE": "hosting.settings", **env},
                         cwd=BASE_DIR, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_default_user_is_off_and_each_node_has_only_its_own_keys():
    text = cp.acl_file_text({"hosting": "pw1", "node-hn1": "pw2", "node-hn2": "pw3"},
                            ["hn1", "hn2"])
    lines = {line.split()[1]: line for line in text.splitlines()}
    assert lines["default"].startswith("user default off ")
    assert "pw1" not in text and "pw2" not in text  # only their SHA-256
    hn1 = lines["node-hn1"].split()
    keys = {word[1:] for word in hn1 if word.startswith("~")}
    assert keys == {"node.hn1", "node.hn1.chores", "node.hn1.console",
                    "_kombu.binding.node.hn1", "_kombu.binding.node.hn1.chores",
                    "_kombu.binding.node.hn1.console", "unacked.node.hn1",
                    "unacked_index.node.hn1", "unacked_mutex.node.hn1", "console:hn1:*"}
    # The one pattern is its own consoles' lists (node names have no ':').
    assert "resetchannels" in hn1 and "-@all" in hn1
    assert [k for k in keys if "*" in k] == ["console:hn1:*"]
    for forbidden in ("+@all", "+flushall", "+config", "+keys", "+acl", "+psubscribe",
                      "+@admin", "+@dangerous", "&*", "allchannels"):
        assert forbidden not in hn1 and forbidden not in lines["hosting"].split()
    # Pub/sub: a node publishes its VPSes' change notices on its own channels only and
    # listens to nothing; the web side listens to those of every VPS.
    assert [w for w in hn1 if w.startswith("&")] == ["&live:hn1:*"]
    assert "+publish" in hn1 and "+subscribe" not in hn1
    web = lines["hosting"].split()
    assert [w for w in web if w.startswith("&")] == ["&live:*"] and "+subscribe" in web


def _redis(tmp_path, acl):
    """A redis-server with the product's ACL file and append-only file; its socket."""
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--dir", str(tmp_path), "--save", "", "--appendonly", "yes",
         "--appendfsync", "always", "--port", "0", "--unixsocket", str(sock),
         "--aclfile", str(acl), "--daemonize", "no", "--logfile", str(tmp_path / "log")])
    wait_until(lambda: sock.exists(), 15, "redis-server did not come up")
    return proc, sock


def test_redis_keeps_the_queues_transactions_across_a_restart(tmp_path):
    """Redis replays its append-only file as the default user, re-checking each MULTI/EXEC
    (redis#14541): the default user stays off (nobody logs in as it) but keeps the rights,
    or every message kombu queued in a transaction would be lost at a restart."""
    acl = tmp_path / "users.acl"
    acl.write_text(cp.acl_file_text({"hosting": "pw1", "node-hn1": "pw2"}, ["hn1"]))
    proc, sock = _redis(tmp_path, acl)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(unix_socket_path=str(sock)).ping()  # anonymous
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(unix_socket_path=str(sock), username="default", password="").ping()
        web = redis.Redis(unix_socket_path=str(sock), username="hosting", password="pw1")
        with web.pipeline(transaction=True) as tx:
            tx.lpush("node.hn1", "message 1").lpush("node.hn1", "message 2").execute()
    finally:
        proc.kill()  # as a crash would
        proc.wait(10)
    sock.unlink()
    proc, sock = _redis(tmp_path, acl)
    try:
        web = redis.Redis(unix_socket_path=str(sock), username="hosting", password="pw1")
        wait_until(lambda: web.ping(), 15, "redis-server did not load its files")
        assert web.lrange("node.hn1", 0, -1) == [b"message 2", b"message 1"]
        assert "NOPERM" not in (tmp_path / "log").read_text()
    finally:
        proc.kill()
        proc.wait(10)


def test_processes_get_their_login_and_key_as_files(tmp_path):
    password = tmp_path / "pw"
    password.write_text("s3cr/t p@ss\n")
    base = {"HOSTING_REDIS_URL": "redis+socket:///run/redis.sock",
            "HOSTING_REDIS_PASSWORD_FILE": str(password)}
    web = settings_of(**base)
    assert web["broker"] == "redis+socket://hosting:s3cr%2Ft%20p%40ss@/run/redis.sock"
    assert web["cache"] == "hosting.core.cache.FallbackRedisCache"
    assert not web["signing"] and web["serializer"] == "json"
    assert web["remote_control"] is False
    key, cert = cp.signing_pair(tmp_path, "node")
    node = settings_of(**base, HOSTING_NODE_NAME="hn1", HOSTING_SIGNING_KEY=str(key),
                       HOSTING_SIGNING_CERT=str(cert), HOSTING_SIGNING_TRUST=str(cert))
    assert node["broker"].startswith("redis+socket://node-hn1:")
    assert node["cache"].endswith("LocMemCache")  # nodes may not touch the cache
    assert node["transport"]["unacked_key"] == "unacked.node.hn1"
    assert node["signing"] and node["serializer"] == "auth" and node["accept"] == ["auth"]


def test_a_node_worker_without_signing_keys_does_not_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTING_")}
    env.update(HOSTING_NODE_NAME="hn9", HOSTING_REDIS_URL="redis://127.0.0.1:1/0",
               DJANGO_SETTINGS_MODULE="hosting.settings", PYTHONPATH=str(BASE_DIR))
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "hosting", "worker", "-Q",
                          "node.hn9", "--without-gossip", "--without-mingle"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0 and "node workers need HOSTING_SIGNING_KEY" in out.stderr


def test_the_stack_keeps_secrets_in_private_files_not_in_the_environment(tmp_path):
    stack = Stack(tmp_path / "data", node_name="hn1", web_user=None)
    stack.prepare_control_plane()
    secrets_dir = tmp_path / "data" / "secrets"
    private = [*secrets_dir.glob("*.password"), *secrets_dir.glob("*.key")]
    assert len(private) == 4
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    values = [p.read_text().strip() for p in secrets_dir.glob("*.password")]
    for role in ("web", "node"):
        env = stack.env(role)
        assert not any(v in " ".join(env.values()) for v in values)
    trust = {p.name for p in (secrets_dir / "trust-node-hn1").iterdir()}
    assert trust == {"web.pem", "node-hn1.pem"}  # a node trusts the web side and itself
    assert {p.name for p in (secrets_dir / "trust-web").iterdir()} == {"web.pem"}
    before = {p: p.read_bytes() for p in private}
    stack.prepare_control_plane()  # made once: a second run keeps them
    assert before == {p: p.read_bytes() for p in private}


def test_the_units_give_each_side_its_own_login_and_key():
    units = render("/opt/hosting")
    for name in ("hosting-web.service", "hosting-console.service",
                 "hosting-housekeeping.service", "hosting-beat.service"):
        assert "LoadCredential=redis-password:/etc/hosting/redis/redis-hosting.password" \
            in units[name]
        assert "HOSTING_SIGNING_KEY=%d/signing-key" in units[name]
        assert "signing-node" not in units[name]
    for name in ("hosting-node.service", "hosting-node-chores.service",
                 "hosting-node-console.service"):
        assert "HOSTING_SIGNING_KEY=/etc/hosting/signing-node/node.key" in units[name]
        assert "redis-hosting.password" not in units[name] and "signing-web" not in units[name]
    conf = (Path(BASE_DIR) / "docs" / "systemd" / "redis-hosting.conf").read_text()
    assert "aclfile /etc/redis/hosting-users.acl" in conf
    assert "\nbind 127.0.0.1 -::1\n" in conf


def test_chores_for_another_node_do_nothing(settings, caplog):
    """A signature covers the arguments, not the task name: a node runs chores only
    for itself, so a replayed body ("hn2") under a chore's name is harmless."""
    from hosting.operations import tasks as op_tasks
    from hosting.usage import tasks as usage_tasks
    settings.NODE_NAME = "hn1"
    for task in (op_tasks.reconcile_node, usage_tasks.sample_node,
                 usage_tasks.collect_traffic):
        assert task("hn2") is None
    assert caplog.text.count("refused a task for node 'hn2' on node hn1") == 3

"""The cache goes on in process memory while Redis is frozen or gone, and back to Redis
when it answers again: pages that use it must not fail with Redis (a real redis-server)."""

import os
import shutil
import signal
import subprocess
import time

import pytest
import redis

from hosting.core import cache as fallback


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server (make deps installs it)")
    socket = tmp_path / "redis.sock"
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(socket),
                               "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=str(socket))
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    yield server, client, f"unix://{socket}"
    if server.poll() is None:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait()


def make_cache(location):
    return fallback.FallbackRedisCache(location, {
        "KEY_PREFIX": "t", "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}})


def timed(call):
    began = time.monotonic()
    result = call()
    return result, time.monotonic() - began


def test_frozen_then_thawed(redis_server, monkeypatch):
    monkeypatch.setattr(fallback, "RETRY_AFTER", 0.5)
    server, client, location = redis_server
    cache = make_cache(location)
    cache.set("shared", 1, 60)
    assert cache.get("shared") == 1
    assert client.exists(cache.make_and_validate_key("shared")) == 1  # really in Redis

    os.kill(server.pid, signal.SIGSTOP)
    value, first = timed(lambda: cache.get("shared", "fallback"))
    assert value == "fallback"  # not known to this process
    assert first < 1.5  # one socket timeout
    value, second = timed(lambda: cache.get("shared", "fallback"))
    assert second < 0.1  # Redis left alone for RETRY_AFTER
    cache.add("failures", 0, 60)
    assert cache.incr("failures") == 1 and cache.get("failures") == 1  # counted locally

    os.kill(server.pid, signal.SIGCONT)
    time.sleep(0.6)
    assert cache.get("shared") == 1  # from Redis again
    assert cache.get("failures") is None  # the local count stays local


def test_gone_redis_answers_from_memory(redis_server):
    server, client, location = redis_server
    cache = make_cache(location)
    server.kill()
    server.wait()
    cache.set("k", "v", 60)
    assert cache.get("k") == "v"
    assert cache.get_or_set("other", lambda: 5, 60) == 5
    assert cache.get_many(["k", "other"]) == {"k": "v", "other": 5}

"""The debian-12 template for real: built with debootstrap from Debian's mirror,
booted with its own init, reached over SSH at the VE's address.

The build takes about a minute; it runs once per session, in CI too.
"""

import crypt
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import host_network
from ve import Limits, VEConfig

from .conftest import ROOT_DIR
from .test_network import A, B

PASSWORD = "debian-root-pass-1"
GiB = 1 << 30


@pytest.fixture(scope="session")
def debian_cache(tmp_path_factory):
    """debian-12 built once, by the engine's own recipe, in the machine's network
    (the test run's own namespace has no way out)."""
    cache = tmp_path_factory.mktemp("debian-cache")
    started = time.monotonic()
    build = f"from ve.storage import recipes; recipes.build({str(cache)!r}, 'debian-12')"
    out = subprocess.run(host_network([sys.executable, "-c", build]), capture_output=True,
                         text=True, timeout=1800, env=dict(os.environ, PYTHONPATH=str(ROOT_DIR)))
    assert out.returncode == 0, out.stderr[-2000:]
    print(f"debian-12 built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return cache


def install(engine, cache):
    for item in cache.iterdir():
        shutil.copy2(item, engine.layout.cache_dir / item.name)


SSH = textwrap.dedent("""
    import json, socket, sys, time, paramiko
    address, password, commands, hold = json.loads(sys.argv[1])
    deadline = time.monotonic() + 60
    while True:  # sshd comes up a moment after the VE starts (host keys at first boot)
        try:
            socket.create_connection((address, 22), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    result = {}
    try:
        client.connect(address, username="root", password=password, timeout=10,
                       allow_agent=False, look_for_keys=False)
    except paramiko.AuthenticationException:
        print(json.dumps({"auth": False})); sys.exit()
    result["auth"] = True
    result["hostkey"] = client.get_transport().get_remote_server_key().get_fingerprint().hex()
    for command in commands:
        _, out, _ = client.exec_command(command, timeout=10)
        result[command] = out.read().decode().strip()
    if hold:  # keep a session open and report when the server ends it
        channel = client.get_transport().open_session()
        channel.exec_command("sleep 600")
        print(json.dumps(result), flush=True)
        started = time.monotonic()
        while not channel.exit_status_ready() and not channel.closed \\
                and client.get_transport().is_active() and time.monotonic() - started < 60:
            time.sleep(0.1)
        print(json.dumps({"session_ended_after": time.monotonic() - started}), flush=True)
    else:
        print(json.dumps(result))
    """)


def ssh(hostnet, address, password, *commands):
    out = hostnet.run(sys.executable, "-c", SSH, json.dumps([address, password, commands, False]),
                      timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_debian_template_boots_and_answers_ssh_with_the_root_password(
        engine, hostnet, debian_cache):
    install(engine, debian_cache)
    meta = {m.name: m for m in engine.template_list()}["debian-12"]
    assert (meta.distribution, meta.version, meta.stop_signal, meta.services) == \
        ("debian", "12", "SIGPWR", ("ssh",))
    for veid, ips in (A, B):
        engine.create(VEConfig(veid, f"ve{veid}.example", "debian-12",
                               Limits(diskspace=1 * GiB, ram=256 << 20), ips=ips))
    hostnet.engine("e.start(401); e.start(402)\nprint('null')")
    # The root password is set from inside the VE, as the dashboard does at create.
    engine.set_password_hash(401, "root",
                             crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512)))

    got = ssh(hostnet, A[1][0], PASSWORD, "id -u", "hostname", "cat /proc/1/comm",
              "ps -eo comm", "ip -o addr show eth0")
    assert got["auth"] is True
    assert got["id -u"] == "0" and got["hostname"] == "ve401.example"
    assert got["cat /proc/1/comm"] == "init"  # Debian's own init is PID 1
    assert "sshd" in got["ps -eo comm"].split()
    assert A[1][0] in got["ip -o addr show eth0"]
    assert ssh(hostnet, A[1][0], "wrong-password-123", "id")["auth"] is False
    # Over IPv6 too, and each VE made its own host keys at first boot.
    assert ssh(hostnet, A[1][1], PASSWORD, "id -u")["id -u"] == "0"
    engine.set_password_hash(402, "root",
                             crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512)))
    assert ssh(hostnet, B[1][0], PASSWORD)["hostkey"] != got["hostkey"]


def test_a_debian_ve_halts_cleanly_and_its_ssh_sessions_end(engine, hostnet, debian_cache):
    install(engine, debian_cache)
    engine.create(VEConfig(401, "ve401.example", "debian-12", Limits(diskspace=1 * GiB), ips=A[1]))
    hostnet.engine("e.start(401)\nprint('null')")
    engine.set_password_hash(401, "root",
                             crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512)))
    session = subprocess.Popen(
        ["nsenter", f"--net={hostnet.path}", sys.executable, "-c", SSH,
         json.dumps([A[1][0], PASSWORD, ["id -u"], True])], stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(session.stdout.readline())["auth"] is True
        took = hostnet.engine("""
            import time
            t = time.monotonic(); e.stop(401, timeout=20); print(time.monotonic() - t)""")
        ended = json.loads(session.stdout.readline())
    finally:
        session.kill()
        session.wait()
    assert took < 10, f"the VE took {took:.1f} s to halt (SIGPWR should halt it cleanly)"
    assert ended["session_ended_after"] < 15, "the SSH session was left hanging"
    assert engine.status(401).state == "stopped"

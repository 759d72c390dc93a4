"""The debian-12 and debian-13 templates for real: built with debootstrap from
Debian's mirror, booted with systemd as init, reached over SSH at the VE's address.

Each build takes about a minute; both run at once, once per session, in CI too.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import DEBIAN_TEMPLATES
from ve import Limits, VEConfig
from ve.cgroups import CgroupV2Driver, cgroup_mounts
from ve.cgroups.fs import CgroupFS
from ve.config import IDMAP_SIZE

from .conftest import wait_for
from .test_network import A, B
from .test_watcher import WatcherProcess
from .test_migration import fleet  # noqa: F401  (two nodes on a data-centre bridge)

NAMES = DEBIAN_TEMPLATES  # built once per run: tests/conftest.py's debian_builds
PASSWORD = "debian-root-pass-1"
GiB = 1 << 30
# Units allowed to have failed in a booted VE (docs/engine.md lists them): none.
DOCUMENTED_FAILED = ()


@pytest.fixture(params=NAMES)
def debian(request, engine, debian_builds):
    """The name of a Debian template, installed in ``engine``'s cache."""
    cache = debian_builds[request.param].result()
    for item in cache.iterdir():
        shutil.copy2(item, engine.layout.cache_dir / item.name)
    return request.param


def set_root_password(engine, veid):
    # The dashboard's SHA-512-crypt (Python 3.13 has no crypt module).
    from hosting.core.shadow import hash_password
    engine.set_password_hash(veid, "root", hash_password(PASSWORD))


def sh(engine, veid, script, timeout=60):
    """Run a shell script in the VE; return its output (stdout and stderr), stripped."""
    out = engine.exec(veid, ["sh", "-c", "exec 2>&1\n" + script], timeout=timeout)
    return out.stdout.decode().strip()


def booted(engine, veid):
    """Wait until systemd has finished booting the VE; return (state, failed units).

    ``--wait`` fails at once while the VE's bus is not up yet: ask again until
    the answer is a state the boot ends in (bounded by the exec timeout).
    """
    state = sh(engine, veid, """
        while :; do
            s=$(systemctl is-system-running --wait 2>/dev/null)
            case $s in running|degraded|maintenance|stopping) echo $s; exit;; esac
            sleep 0.2
        done""", timeout=150)
    failed = sh(engine, veid, "systemctl list-units --failed --plain --no-legend | cut -d' ' -f1")
    return state, tuple(failed.split())


# The start of both SSH scripts: wait for sshd (it comes up a moment after the VE
# starts: host keys at first boot); ``address`` is set by the script.
WAIT_FOR_SSHD = textwrap.dedent("""
    import json, socket, sys, time, paramiko
    def wait_for_sshd(address):
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((address, 22), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    """)
SSH = WAIT_FOR_SSHD + textwrap.dedent("""
    address, password, commands, hold = json.loads(sys.argv[1])
    wait_for_sshd(address)
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
        _, out, _ = client.exec_command(command, timeout=30)
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
                      timeout=180)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_debian_ve_boots_systemd_and_answers_ssh_with_the_root_password(
        engine, hostnet, debian):
    """systemd boots the VE to "running": journald, logind and sshd work, and each
    VE has its own machine ID and SSH host keys."""
    meta = {m.name: m for m in engine.template_list()}[debian]
    assert (meta.distribution, meta.version, meta.stop_signal, meta.services, meta.cgroup2) == \
        ("debian", debian[-2:], "SIGRTMIN+4", ("ssh",), True)
    for veid, ips in (A, B):
        engine.create(VEConfig(veid, f"ve{veid}.example", debian,
                               Limits(diskspace=1 * GiB, ram=256 << 20), ips=ips))
    hostnet.engine("e.start(401); e.start(402)\nprint('null')")
    set_root_password(engine, 401)  # from inside the VE, as the dashboard does at create
    set_root_password(engine, 402)
    assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
    assert sh(engine, 401, "cat /proc/1/comm") == "systemd"
    assert sh(engine, 401, "systemctl is-active systemd-journald systemd-logind dbus ssh"
              ).split() == ["active"] * 4
    assert "Journal started" in sh(engine, 401, "journalctl -b --no-pager")

    got = ssh(hostnet, A[1][0], PASSWORD, "id -u", "hostname", "ip -o addr show eth0",
              "loginctl list-sessions --no-legend", "systemctl is-active user@0.service",
              "cat /etc/machine-id")
    assert got["auth"] is True
    assert got["id -u"] == "0" and got["hostname"] == "ve401.example"
    assert A[1][0] in got["ip -o addr show eth0"]
    assert " root " in f" {got['loginctl list-sessions --no-legend']} "  # logind made a session
    assert got["systemctl is-active user@0.service"] == "active"  # and root's user manager
    assert ssh(hostnet, A[1][0], "wrong-password-123", "id")["auth"] is False
    # Over IPv6 too; the other VE made its own host keys and machine ID at first boot.
    assert ssh(hostnet, A[1][1], PASSWORD, "id -u")["id -u"] == "0"
    other = ssh(hostnet, B[1][0], PASSWORD, "cat /etc/machine-id")
    assert other["hostkey"] != got["hostkey"]
    assert other["cat /etc/machine-id"] != got["cat /etc/machine-id"]
    # The logins started no unit that failed (root's user manager, say).
    assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)


def test_ssh_restarts_as_a_unit_and_a_host_stop_is_systemds_poweroff(engine, hostnet, debian):
    """`systemctl restart ssh` keeps SSH answering; `stop` from the host halts the VE
    through systemd's poweroff.target (not SIGKILL), ending the SSH sessions."""
    engine.create(VEConfig(401, "ve401.example", debian, Limits(diskspace=1 * GiB), ips=A[1]))
    hostnet.engine("e.start(401)\nprint('null')")
    set_root_password(engine, 401)
    assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
    before = sh(engine, 401, "systemctl show -P MainPID ssh")
    assert sh(engine, 401, "systemctl restart ssh && systemctl is-active ssh") == "active"
    assert sh(engine, 401, "systemctl show -P MainPID ssh") != before
    assert ssh(hostnet, A[1][0], PASSWORD, "id -u")["id -u"] == "0"

    session = subprocess.Popen(
        ["nsenter", f"--net={hostnet.path}", sys.executable, "-c", SSH,
         json.dumps([A[1][0], PASSWORD, ["id -u"], True])], stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(session.stdout.readline())["auth"] is True
        stopped = hostnet.engine("""
            import io, logging
            logging.basicConfig(stream=(log := io.StringIO()), level=logging.WARNING)
            e.stop(401, timeout=60)
            print(json.dumps(log.getvalue()))""")
        ended = json.loads(session.stdout.readline())
    finally:
        session.kill()
        session.wait()
    assert "did not stop" not in stopped, stopped  # the engine fell back to SIGKILL
    assert ended["session_ended_after"] < 60, "the SSH session was left hanging"
    assert engine.status(401).state == "stopped"
    # systemd went all the way down: its last words are in the VE's journal.
    hostnet.engine("e.start(401)\nprint('null')")
    assert "Reached target poweroff.target" in sh(engine, 401, "journalctl --no-pager -q")


def test_the_ve_owns_its_cgroup_tree_and_sees_nothing_of_the_hosts(engine, hostnet, debian):
    """/sys/fs/cgroup is the VE's own cgroup2 group, delegated to its root: systemd
    makes its units' groups there; every other cgroup file, v1 included, is host root's."""
    engine.create(VEConfig(401, "ve401.example", debian, Limits(diskspace=1 * GiB), ips=A[1]))
    hostnet.engine("e.start(401)\nprint('null')")
    assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
    assert_cgroup_view(engine, 401)


def assert_cgroup_view(engine, veid):
    """Check the VE's view of cgroups from inside and its group from the host."""
    assert sh(engine, veid, "findmnt -n -o FSTYPE,FSROOT /sys/fs/cgroup").split() == \
        ["cgroup2", "/"]
    assert "0::/init.scope" in sh(engine, veid, "cat /proc/1/cgroup").splitlines()
    assert sh(engine, veid, "systemctl show -P ControlGroup ssh") == "/system.slice/ssh.service"
    listed = sh(engine, veid, "find /sys/fs/cgroup -name cgroup.procs | xargs cat").split()
    assert listed and "0" not in listed  # a process outside the VE would show as 0
    top = engine.cgroups.parent.split("/")[0]
    assert top not in sh(engine, veid, "mkdir -p /tmp/c2 && mount -t cgroup2 none /tmp/c2 "
                                       "&& ls /tmp/c2 && umount /tmp/c2")
    refused = sh(engine, veid, """
        echo 1 > /sys/fs/cgroup/cgroup.max.depth || echo refused-v2
        mkdir -p /tmp/m && mount -t cgroup -o pids none /tmp/m || echo no-v1
        echo 1 > /tmp/m/pids.max || echo refused-v1""")
    assert "refused-v2" in refused
    assert "no-v1" in refused or "refused-v1" in refused

    init = engine.status(veid).init_pid
    pidns = os.readlink(f"/proc/{init}/ns/pid")
    pids = engine.cgroups.pids(str(veid))
    assert init in pids and all(os.readlink(f"/proc/{p}/ns/pid") == pidns for p in pids)
    group = engine.cgroups.clone_target(str(veid))
    owner = veid * IDMAP_SIZE  # VE root on the host
    assert os.path.isdir(os.path.join(group, "init.scope"))
    assert {f: os.stat(os.path.join(group, f)).st_uid for f in
            ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.max.depth")} == \
        {"": owner, "cgroup.procs": owner, "cgroup.subtree_control": owner, "cgroup.max.depth": 0}


def test_systemd_runs_on_a_pure_v2_driver_too(engine, debian):
    """With the v2 driver (as on a pure cgroup2 host; here on the hybrid host's cgroup2
    mount, which has no controllers) the VE gets the same delegated group, boots to
    "running", runs `exec` commands and powers off on stop."""
    mounts = cgroup_mounts()["v2"]
    engine.cgroups = CgroupV2Driver(CgroupFS(mounts[0]), engine.cgroups.parent,
                                    require_controllers=False)
    engine.create(VEConfig(401, "ve401.example", debian, Limits(diskspace=1 * GiB)))
    engine.start(401)
    assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
    assert_cgroup_view(engine, 401)
    engine.stop(401, timeout=60)
    engine.start(401)
    assert "Reached target poweroff.target" in sh(engine, 401, "journalctl --no-pager -q")
    engine.stop(401, timeout=60)


def test_under_the_node_watcher_a_host_stop_is_a_clean_poweroff_and_no_event(
        engine, debian, monkeypatch):
    """As in production, where the watcher holds each VE's seccomp notifier: the
    reboot(2) systemd makes at the end of a host stop is the stop's, not an event."""
    monkeypatch.setenv("VE_WATCH", "on")
    watcher = WatcherProcess(engine)
    try:
        engine.create(VEConfig(401, "ve401.example", debian, Limits(diskspace=1 * GiB)))
        engine.start(401)
        assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
        engine.stop(401, timeout=60)
        engine.start(401)
        assert "Reached target poweroff.target" in sh(engine, 401, "journalctl --no-pager -q")
        engine.stop(401, timeout=60)
        assert [e for e in engine.events() if e["veid"] == 401] == [], watcher.output()
    finally:
        watcher.stop()


def test_the_console_has_systemds_login_prompt(engine, debian, monkeypatch):
    """Under the node watcher the VE's /dev/console is a terminal: systemd's
    console-getty runs on it (and only then: booted() above finds no failed unit
    without one), and root logs in there with the password."""
    from .test_console import read_until
    monkeypatch.setenv("VE_WATCH", "on")
    watcher = WatcherProcess(engine)
    try:
        engine.create(VEConfig(401, "ve401.example", debian, Limits(diskspace=1 * GiB)))
        engine.start(401)
        assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
        set_root_password(engine, 401)
        with engine.console(401) as conn:
            conn.send(b"\n")  # agetty asks again: the first prompt may be gone by now
            read_until(conn, "login:", timeout=30)
            conn.send(b"root\n")
            read_until(conn, "Password:")
            conn.send(PASSWORD.encode() + b"\n")
            read_until(conn, "# ", timeout=30)
            conn.send(b"hostname; ps -o comm= -p $(pgrep -o agetty) || echo no-agetty\n")
            read_until(conn, "ve401.example")
    finally:
        watcher.stop()


def test_reboot_and_poweroff_from_inside_behave_like_a_vps(engine, hostnet, debian, monkeypatch):
    """`systemctl reboot` inside brings the VE back by itself (SSH answers again);
    `systemctl poweroff` leaves it stopped and cleaned up. The watcher runs where
    the VE's host side lives, as the node's does."""
    from .test_watcher import events_of, leftovers, new_init, stopped
    monkeypatch.setenv("VE_WATCH", "on")
    watcher = WatcherProcess(engine, netns=hostnet.path)
    try:
        engine.create(VEConfig(401, "ve401.example", debian, Limits(diskspace=1 * GiB),
                               ips=A[1]))
        old = hostnet.engine("print(json.dumps(e.start(401)))")
        assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
        set_root_password(engine, 401)
        engine.exec(401, ["systemctl", "reboot"], timeout=30)
        assert new_init(engine, 401, old), watcher.output()
        assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
        assert ssh(hostnet, A[1][0], PASSWORD, "cat /proc/1/comm")["cat /proc/1/comm"] \
            == "systemd"
        engine.exec(401, ["systemctl", "poweroff"], timeout=30)
        assert stopped(engine, 401)
        assert wait_for(lambda: not leftovers(engine, 401), 20), leftovers(engine, 401)
        assert wait_for(lambda: [e["reason"] for e in events_of(engine, 401)] ==
                        ["reboot", "poweroff"], 10), events_of(engine, 401)
        assert "veth401" not in hostnet.run("ip", "-o", "link").stdout
    finally:
        watcher.stop()


# One SSH session kept open: each line on stdin is run in the same shell channel
# and its output printed as a JSON line ({"out": ...}, or {"error": ...} once the
# session is gone).
HELD_SESSION = WAIT_FOR_SSHD + textwrap.dedent("""
    address, password = json.loads(sys.argv[1])
    wait_for_sshd(address)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(address, username="root", password=password, timeout=10,
                   allow_agent=False, look_for_keys=False)
    shell = client.get_transport().open_session()
    shell.settimeout(30)
    shell.exec_command("sh")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            shell.sendall(line.strip() + "; echo __done__\\n")
            got = b""
            while b"__done__" not in got:
                chunk = shell.recv(4096)
                if not chunk:
                    raise EOFError("the session ended")
                got += chunk
            print(json.dumps({"out": got.decode().replace("__done__", "").strip()}),
                  flush=True)
        except Exception as exc:
            print(json.dumps({"error": f"{exc.__class__.__name__}: {exc}"}), flush=True)
    """)


class HeldSession:
    """An SSH login to ``address`` from the namespace at ``netns_path``, kept open."""

    def __init__(self, netns_path, address):
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns_path}", sys.executable, "-c", HELD_SESSION,
             json.dumps([address, PASSWORD])], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.kill()
        self.proc.wait()


# Checkpoint and live moves, on both: debian-13's systemd (257) pins systemd-executor
# with an O_PATH descriptor, the exe of the (sd-pam) an SSH login starts, which our
# criu patch restores (.ci/criu-patches/exe-link-o-path.patch).
@pytest.fixture(params=NAMES)
def migratable_debian(request, engine, debian_builds):
    cache = debian_builds[request.param].result()
    for item in cache.iterdir():
        shutil.copy2(item, engine.layout.cache_dir / item.name)
    return request.param


def wake_on_demand_daemons(engine, veid):
    """Start the daemons Debian runs on demand (their sandbox made namespaces)."""
    sh(engine, veid, "hostnamectl >/dev/null; timedatectl >/dev/null; localectl >/dev/null")
    assert sh(engine, veid, "systemctl is-active systemd-logind systemd-hostnamed "
                            "systemd-timedated systemd-localed").split() == ["active"] * 4


def test_its_daemons_stay_in_the_ves_namespaces_and_a_hibernation_keeps_an_ssh_session(
        engine, hostnet, migratable_debian):
    """With Debian's sandboxed daemons running (logind always; hostnamed, timedated and
    localed on demand), no process of the VE has a namespace of its own, so CRIU can
    save it: hibernated and resumed, an open SSH session carries on."""
    from ve.engine.checkpoint import undumpable
    engine.create(VEConfig(401, "ve401.example", migratable_debian, Limits(diskspace=1 * GiB),
                           ips=A[1]))
    hostnet.engine("e.start(401)\nprint('null')")
    set_root_password(engine, 401)
    assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
    wake_on_demand_daemons(engine, 401)
    init = engine.status(401).init_pid
    assert undumpable(engine.cgroups.pids("401"), init) is None
    session = HeldSession(hostnet.path, A[1][0])
    try:
        assert session.run("echo before $$")["out"].startswith("before ")
        shell = session.run("echo $$")["out"]
        hostnet.engine("print(json.dumps(e.hibernate(401)))")
        assert engine.status(401).state == "stopped"
        hostnet.engine("print(json.dumps(e.resume(401)))")
        assert session.run("echo after $$") == {"out": f"after {shell}"}
    finally:
        session.close()
    assert booted(engine, 401) == ("running", DOCUMENTED_FAILED)
    # systemd still runs its units after the restore (its cgroup tree came back).
    assert sh(engine, 401, "systemctl restart systemd-logind && systemctl is-active "
                           "systemd-logind") == "active"


def test_a_debian_ve_moves_live_to_another_node_with_its_ssh_session(migratable_debian,
                                                                    fleet):
    """The issue's case: a systemd Debian VE with an open SSH session moves live between
    two nodes; the session goes on at the target, same shell, and systemd still runs
    its units there."""
    from .test_migration import PORT, VE_IP, VEID
    a, b, dc = fleet
    a.engine.create(VEConfig(VEID, "moving-debian.example", migratable_debian,
                             Limits(diskspace=1 * GiB, ram=256 << 20), ips=(VE_IP,)))
    a.net.engine("print(e.start(v['veid']))", veid=VEID)
    set_root_password(a.engine, VEID)
    assert booted(a.engine, VEID) == ("running", DOCUMENTED_FAILED)
    wake_on_demand_daemons(a.engine, VEID)
    session = HeldSession(dc.path, VE_IP)
    try:
        shell = session.run("echo $$")["out"]
        done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}")
        assert done["mode"] == "live", done
        assert session.run("echo after $$; hostname") == {
            "out": f"after {shell}\nmoving-debian.example"}
    finally:
        session.close()
    assert not a.engine.layout.conf(VEID).exists()
    assert booted(b.engine, VEID) == ("running", DOCUMENTED_FAILED)
    assert sh(b.engine, VEID, "systemctl restart systemd-logind && systemctl is-active "
                              "systemd-logind ssh").split() == ["active", "active"]
    # Restored, it still stops by systemd's own power-off (not killed at the timeout:
    # a restored user manager that watched memory pressure held it, debian.py).
    stop = b.net.run(sys.executable, "-m", "ve.cli", "stop", str(VEID), env=b.env())
    assert "killing it" not in stop.stderr and "is stopped" in stop.stdout, stop

"""A VE root who replaces every program in the VE cannot hang or bloat the host.

The engine changes a VE's files by its own code from inside the VE (never by
running a program of the VE), waits on anything in the VE with a timeout and
keeps at most a bounded amount of its output. Here every binary of a busybox
VE (busybox itself, so also /bin/sh and /sbin/init) is replaced by one that
floods its output or by one that never exits, and every verb must still end
in time with the caller's memory flat; the files the engine writes land
inside the VE and nowhere else, whatever the VE planted in their place.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from ve import Limits, VEConfig
from ve.errors import ResourceError

from tests.engine.conftest import ROOT_DIR, hostnet, wait_for  # noqa: F401  (fixture)
from tests.engine.test_network import A, HOST_V4

HOSTILE = {
    # Writes as fast as it can, on stdout and stderr, forever.
    "flood": r"""
        #include <string.h>
        #include <unistd.h>
        int main(void) {
            static char buf[65536];
            memset(buf, 'y', sizeof buf);
            for (;;) { write(1, buf, sizeof buf); write(2, buf, sizeof buf); }
        }""",
    # Ignores every signal it can and never exits.
    "hang": r"""
        #include <signal.h>
        #include <unistd.h>
        int main(void) {
            for (int s = 1; s < 65; s++) signal(s, SIG_IGN);
            for (;;) pause();
        }""",
}
HASH = "$6$saltsalt$" + "a" * 86
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileTestKey hostile@test"
SMALL = Limits(diskspace=128 << 20, diskinodes=16384)
SECONDS = 45  # every verb ends well within this (stop timeouts here are 3 s)
MAX_RSS_MIB = 150  # a vectl process; capturing a flood would pass this in a second


@pytest.fixture(scope="module")
def hostile_binaries(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is missing: `make test` installs gcc and libc6-dev")
    built = {}
    for name, source in HOSTILE.items():
        directory = tmp_path_factory.mktemp(f"hostile-{name}")
        (directory / f"{name}.c").write_text(textwrap.dedent(source))
        out = subprocess.run([gcc, "-static", "-O2", "-o", str(directory / name),
                              str(directory / f"{name}.c")], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        built[name] = (directory / name).read_bytes()
    return built


def replace_every_program(engine, veid, binary):
    """Put ``binary`` in place of /bin/busybox: every applet, sh and init included."""
    result = engine.exec(veid, ["/bin/sh", "-c", "cat > /bin/.hostile && chmod 755 /bin/.hostile"
                                                 " && mv /bin/.hostile /bin/busybox"],
                         input=binary)
    assert result.returncode == 0, result.stderr


def run_vectl(hostnet, engine, *args):
    """Run vectl in the VE's host namespace; return (exit code, seconds, peak RSS in MiB).

    The peak is sampled from /proc while it runs (rusage would count the
    moment between fork and exec, when the child is a copy of this test).
    """
    env = dict(os.environ, VE_ROOT=str(engine.layout.root),
               VE_CGROUP_PARENT=engine.cgroups.parent, PYTHONPATH=str(ROOT_DIR))
    started = time.monotonic()
    proc = subprocess.Popen(["nsenter", f"--net={hostnet.path}", sys.executable, "-m", "ve.cli",
                             *map(str, args)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _rss_kib(proc.pid))
        if time.monotonic() - started > SECONDS:
            proc.kill()
            proc.wait()
            raise AssertionError(f"vectl {' '.join(map(str, args))} still runs after {SECONDS} s")
        time.sleep(0.01)
    return proc.returncode, time.monotonic() - started, peak / 1024


def _rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):  # gone, or a zombie
        return 0


def private(engine, veid, path):
    """A file of the (mounted) VE, read by the test from the host side."""
    return (engine.layout.private(veid) / path.lstrip("/")).read_bytes()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_every_verb_ends_in_time_with_flat_memory_whatever_the_ve_runs(
        engine, hostnet, hostile_binaries, kind):
    veid = A[0]
    engine.create(VEConfig(veid, "hostile.example", "busybox", SMALL, ips=A[1][:1],
                           nameservers=(HOST_V4,)))
    assert run_vectl(hostnet, engine, "start", veid)[0] == 0
    replace_every_program(engine, veid, hostile_binaries[kind])

    def verbs(*steps):  # (arguments, the exit code of a clean outcome)
        for args, clean in steps:
            code, seconds, rss = run_vectl(hostnet, engine, *args)
            assert code == clean, f"vectl {args}: exit {code}"
            assert rss < MAX_RSS_MIB, f"vectl {args}: {rss:.0f} MiB"

    def accounts():  # the engine's own work through the API, as the dashboard does it
        took = hostnet.engine("""
            import time
            t = time.monotonic()
            e.set_password_hash(v["veid"], "root", v["hash"])
            e.add_ssh_key(v["veid"], v["key"])
            print(json.dumps(time.monotonic() - t))""", veid=veid, hash=HASH, key=KEY)
        assert took < 5
        assert f"root:{HASH}:".encode() in private(engine, veid, "/etc/shadow")
        assert private(engine, veid, "/root/.ssh/authorized_keys") == (KEY + "\n").encode()

    verbs((("set", veid, "--nameserver", "198.18.7.2", "--nameserver", "198.18.7.3"), 0),
          (("set", veid, "--hostname", "renamed.example"), 0),
          (("set", veid, "--ipadd", A[1][1], "--ram", "300M"), 0),
          (("status", veid), 0),
          (("list", "-a"), 0),
          (("exec", "--timeout", "2", veid, "true"), 6))  # killed at its timeout
    resolv = private(engine, veid, "/etc/resolv.conf")
    assert resolv == b"nameserver 198.18.7.2\nnameserver 198.18.7.3\n"
    assert f"{A[1][1]}\trenamed.example renamed".encode() in private(engine, veid, "/etc/hosts")
    accounts()
    # Init's shutdown runs the VE's (hostile) umount; then init itself is hostile.
    verbs((("restart", veid, "--timeout", "3"), 0),
          (("stop", veid, "--timeout", "3"), 0),
          (("start", veid), 0))
    accounts()
    verbs((("stop", veid, "--fast"), 0),
          (("reinstall", veid, "--timeout", "3"), 0),
          (("start", veid), 0),
          (("destroy", veid), 0))
    assert engine.layout.veids() == []


def test_captured_output_and_waits_are_bounded(engine, hostile_binaries):
    """Engine.exec keeps at most ``max_output`` bytes and waits at most ``timeout``."""
    engine.create(VEConfig(101, "bounded.example", "busybox", SMALL))
    engine.start(101)
    replace_every_program(engine, 101, hostile_binaries["flood"])
    started = time.monotonic()
    with pytest.raises(ResourceError, match="bytes of output: killed"):
        engine.exec(101, ["/bin/sh"], max_output=8 << 20)
    with pytest.raises(ResourceError, match="still running after 1 s: killed"):
        engine.exec(101, ["/bin/sh"], timeout=1, stdout=open(os.devnull, "wb"),
                    stderr=open(os.devnull, "wb"))
    assert time.monotonic() - started < 20
    assert wait_for(lambda: engine.status(101).nproc == 1)  # the killed commands are gone


@pytest.mark.parametrize("plant, error", [
    # A magic link (init's stdin): refused, even though it leads somewhere harmless.
    ("ln -sf /proc/1/fd/0 /etc/shadow", "Too many levels of symbolic links"),
    ("rm /etc/shadow && mkfifo /etc/shadow", "not a regular file"),
    ("rm /etc/shadow && dd if=/dev/zero of=/etc/shadow bs=1M seek=8 count=1 2>/dev/null",
     "larger than"),
])
def test_a_planted_shadow_file_fails_cleanly(engine, plant, error):
    engine.create(VEConfig(101, "planted.example", "busybox", SMALL))
    engine.start(101)
    assert engine.exec(101, ["sh", "-c", plant]).returncode == 0
    started = time.monotonic()
    with pytest.raises(ResourceError, match=error):
        engine.set_password_hash(101, "root", HASH)
    assert time.monotonic() - started < 5


def test_files_are_replaced_inside_the_ve_never_through_its_links(engine, tmp_path):
    """Symlinks the VE planted, absolute or climbing, resolve inside the VE; the
    engine replaces the link itself and no host file changes."""
    bait = tmp_path / "host-file"
    bait.write_text("host data\n")
    engine.create(VEConfig(101, "links.example", "busybox", SMALL))
    engine.start(101)
    climb = "../" * 30 + str(bait).lstrip("/")
    script = (f"ln -sf {bait} /etc/resolv.conf && mkdir -p /root && "
              f"ln -sfn /{climb} /root/.ssh")
    assert engine.exec(101, ["sh", "-c", script]).returncode == 0
    engine.set(101, nameservers=("198.18.7.1",))
    assert not os.path.islink(engine.layout.private(101) / "etc/resolv.conf")
    inside = engine.exec(101, ["cat", "/etc/resolv.conf"]).stdout
    assert inside == b"nameserver 198.18.7.1\n"
    # /root/.ssh leads, inside the VE, to a path that does not exist there: refused
    with pytest.raises(ResourceError, match="cannot install the SSH key"):
        engine.add_ssh_key(101, KEY)
    assert bait.read_text() == "host data\n"
    assert sorted(os.listdir(tmp_path)) == ["host-file", "ve"]

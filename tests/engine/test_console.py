"""Consoles for real: a busybox VE's /dev/console is a terminal whose master the node
watcher holds; boot output waits in its backlog, a getty gives a login prompt, typing
and window sizes reach the VE, and the console ends with the VE's init."""

import os
import time

import pytest

from ve import Limits, VEConfig
from ve.errors import StateError, Unsupported

from .conftest import vectl, wait_for

VEID = 151
PASSWORD = "console-pass-1"


@pytest.fixture
def with_console(monkeypatch):
    """VEs get a console; the engine starts the node watcher that holds them (stopped
    with the engine fixture's VE_ROOT)."""
    monkeypatch.setenv("VE_CONSOLE", "on")
    monkeypatch.setenv("VE_WATCH", "auto")


def make(engine, veid=VEID):
    from hosting.core.shadow import hash_password
    engine.create(VEConfig(veid, f"console{veid}.example", "busybox", Limits()))
    engine.start(veid)
    engine.set_password_hash(veid, "root", hash_password(PASSWORD))


def read_until(conn, wanted, timeout=10.0):
    """Console output up to and including ``wanted`` (AssertionError if it never shows)."""
    import select
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} never came; got {seen[-500:]!r}"
        if select.select([conn], [], [], left)[0]:
            data = conn.recv(65536)
            if not data:
                raise AssertionError(f"the console ended before {wanted!r}: {seen[-500:]!r}")
            seen += data
    return seen.decode(errors="replace")


def log_in(conn):
    read_until(conn, "login:")
    conn.send(b"root\n")
    read_until(conn, "Password:")
    conn.send(PASSWORD.encode() + b"\n")
    read_until(conn, "# ")


def test_log_in_on_the_console_and_run_a_command(engine, with_console):
    make(engine)
    with engine.console(VEID, rows=30, cols=100) as conn:
        log_in(conn)
        conn.send(b"hostname; stty size\n")
        out = read_until(conn, "30 100")
        assert f"console{VEID}.example" in out
        conn.resize(40, 120)
        conn.send(b"stty size\n")
        read_until(conn, "40 120")
    # A second client sees the recent output first (the backlog), then live output.
    with engine.console(VEID) as conn:
        read_until(conn, "40 120")
        conn.send(b"echo again-$((6*7))\n")
        read_until(conn, "again-42")


def test_two_clients_see_the_same_console(engine, with_console):
    make(engine)
    with engine.console(VEID) as one, engine.console(VEID) as two:
        read_until(one, "login:")
        read_until(two, "login:")
        one.send(b"root\n")
        read_until(two, "Password:")


def test_writing_to_the_console_never_blocks_the_ve(engine, with_console):
    """Nobody attached: the watcher drains the console, so 4 MiB written to it end."""
    make(engine)
    began = time.monotonic()
    done = engine.exec(VEID, ["sh", "-c", "head -c 4194304 /dev/zero > /dev/console"],
                       timeout=30)
    assert done.returncode == 0 and time.monotonic() - began < 30


def test_the_console_ends_with_the_ve_and_returns_with_it(engine, with_console):
    make(engine)
    conn = engine.console(VEID)
    read_until(conn, "login:")
    engine.stop(VEID, timeout=5)
    assert wait_for(lambda: conn.recv(65536) == b"", 10)
    conn.close()
    with pytest.raises(StateError, match="not running"):
        engine.console(VEID)
    engine.start(VEID)
    with engine.console(VEID) as conn:
        read_until(conn, "login:")


def test_without_a_console_the_ve_keeps_dev_null_and_no_getty(engine, monkeypatch):
    """VE_CONSOLE=off (or no node watcher): /dev/console is /dev/null, and the busybox
    getty's script ends at once, leaving no process behind."""
    monkeypatch.setenv("VE_CONSOLE", "off")
    monkeypatch.setenv("VE_WATCH", "auto")
    make(engine)
    with pytest.raises(StateError, match="without a console"):
        engine.console(VEID)
    out = engine.exec(VEID, ["sh", "-c", "ls -l /dev/console; ps -o comm"]).stdout.decode()
    assert "getty" not in out and " 1, " in out  # /dev/null is char device 1,3


def test_the_console_belongs_to_the_ve_root(engine, with_console):
    """Inside, /dev/console is a terminal owned by the VE's root (its getty may give it
    to root's group); on the host, its owner is the VE's first uid (VE root is not
    host root)."""
    make(engine)
    out = engine.exec(VEID, ["sh", "-c", "ls -ln /dev/console; tty < /dev/console"]).stdout
    line = out.decode().splitlines()[0].split()
    assert line[0].startswith("crw--w----") and line[2] == "0" and line[3] in ("0", "5"), out
    cfg = engine.config(VEID)
    pts = os.readlink(f"/proc/{engine._running_init(VEID).pid}/fd/0")
    assert pts.startswith("/dev/pts/") and os.stat(pts).st_uid == cfg.idmap_base


def test_vectl_console_relays_a_session(engine, with_console):
    make(engine)
    done = vectl(engine, "console", VEID, input="root\n" + PASSWORD + "\nhostname\nexit\n",
                 check=False)
    assert f"console{VEID}.example" in done.stdout, (done.stdout[-800:], done.stderr)


def test_the_console_comes_back_after_hibernation(engine, with_console):
    """CRIU is told the console is external and gets a new terminal at the restore: the
    getty waiting on it goes on, and the new terminal is attachable and logs in."""
    make(engine)
    with engine.console(VEID) as conn:
        read_until(conn, "login:")
    engine.hibernate(VEID)
    engine.start(VEID)  # resumes from the checkpoint
    with engine.console(VEID) as conn:
        conn.send(b"\n")  # the new terminal has no backlog: the getty asks again
        log_in(conn)
        conn.send(b"hostname\n")
        read_until(conn, f"console{VEID}.example")


def test_a_login_session_on_the_console_is_named_when_it_blocks_a_checkpoint(
        engine, with_console):
    """A shell logged in on the console holds /dev/tty, which CRIU cannot save with an
    external terminal: the checkpoint is refused saying so, and the VE runs on."""
    make(engine)
    with engine.console(VEID) as conn:
        log_in(conn)
        with pytest.raises(Unsupported, match="logged in on its console"):
            engine.hibernate(VEID)
        conn.send(b"echo still-$((40+2))\n")
        read_until(conn, "still-42")


def test_the_console_outlives_a_killed_watcher(engine, with_console):
    """The watcher's twin keeps a copy of the console's master: the login session on it
    goes on under the watcher the twin becomes."""
    import signal
    from ve import watch
    make(engine)
    with engine.console(VEID) as conn:
        log_in(conn)
    old = watch.request(engine.layout, {"op": "ping"})["pid"]
    os.kill(old, signal.SIGKILL)

    def new_watcher():
        try:
            pid = watch.request(engine.layout, {"op": "ping"}, timeout=1)["pid"]
        except (OSError, ValueError):
            return None
        return pid if pid != old else None
    assert wait_for(new_watcher, 15)
    with engine.console(VEID) as conn:
        conn.send(b"echo survived-$((40+2))\n")
        read_until(conn, "survived-42")

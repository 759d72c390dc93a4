"""Running CRIU for a VE: the dump and restore command lines, and what a failure means.

Only primitives here (a PID, directories, names); the engine decides when
(ve/engine/checkpoint.py). The options are those ../shared/CRIU.md found to
work with this engine's VEs: an nftables network lock (no iptables on our
nodes), the host's bind mounts into the VE (masks, /dev nodes, lxcfs) declared
external and found again on restore, TCP connections kept, the VE's eth0
brought in from a veth the engine made beforehand.
"""

import os
import re
import subprocess
import time
from collections import namedtuple

DUMP_LOG, RESTORE_LOG = "dump.log", "restore.log"
INIT_PIDFILE = "init.pid"
CONSOLE_KEY = "console"  # the name the console's bind mount has in the images
TIMEOUT = 600  # seconds: a dump writes the VE's memory to disk

# Lines of a criu log that are noise on our nodes, not the cause of a failure.
_NOISE = re.compile(r"RLIMIT_NOFILE|iptables|ip6tables|Address already assigned|"
                    r"address already assigned")
_ERROR = re.compile(r"Error \(([^)]*)\): (.*)")


class CriuFailed(OSError):
    """criu exited non-zero; ``cause`` is its first meaningful error line."""

    def __init__(self, verb, cause, log_path):
        super().__init__(f"criu {verb} failed: {cause}")
        self.cause = cause
        self.log_path = log_path


class Timing(namedtuple("Timing", "seconds frozen_ms")):
    """How long criu ran, and (dump) how long the VE was frozen, from criu's stats."""

    __slots__ = ()


def dump(criu, pid, images, leave_running=False, console=None):
    """Dump the process tree of ``pid`` (a VE's init, host PID) into ``images``.

    The tree is killed once the dump is complete unless ``leave_running``;
    after a failed dump it runs on as before. ``console``: the id of its console
    terminal (``console_id``), whose master lives outside the tree: external, as
    is the bind of it over /dev/console.
    """
    argv = [criu, "dump", "--tree", str(pid), "--images-dir", str(images),
            "--log-file", DUMP_LOG, "-v4",
            "--network-lock", "nftables", "--tcp-established", "--file-locks",
            "--link-remap", "--external", "mnt[]"]
    if console:
        argv += ["--external", f"mnt[/dev/console]:{CONSOLE_KEY}", "--external", console]
    if leave_running:
        argv.append("--leave-running")
    seconds = _run("dump", argv, images / DUMP_LOG)
    return Timing(seconds, _frozen_ms(images))


def console_id(init_pid):
    """CRIU's name of a VE's console terminal: tty[rdev:dev] of its /dev/console."""
    st = os.stat(f"/proc/{init_pid}/root/dev/console")
    return f"tty[{st.st_rdev:x}:{st.st_dev:x}]"


def restore(criu, images, root, cgroup, veth_peer=None, sibling=False, console=None):
    """Restore the tree in ``images`` with its root at ``root``; return init's host PID.

    ``cgroup``: the VE's group path in every hierarchy (/parent/VEID), made by the
    caller: init goes there, wherever the dumped one was (another node's parent).
    ``veth_peer``: the name, in the caller's network namespace, of the veth end
    that becomes the VE's eth0 (moved into the restored namespace by criu).
    ``sibling``: init becomes the caller's child (criu's --restore-sibling), so the
    caller can wait for it and learn how it ended; else it is nobody's child.
    ``console``: (id at the dump, descriptor of the new terminal): the restored tree
    gets that terminal where it had its console, bound over /dev/console too.
    """
    pidfile = images / INIT_PIDFILE
    if pidfile.exists():
        pidfile.unlink()
    argv = [criu, "restore", "--restore-detached", "--images-dir", str(images),
            "--log-file", RESTORE_LOG, "-v4", "--root", str(root),
            "--ext-mount-map", "auto", "--tcp-established", "--file-locks", "--link-remap",
            "--pidfile", str(pidfile), "--cgroup-root", cgroup]
    if veth_peer:
        argv += ["--external", f"netdev[eth0]:{veth_peer}"]
    if sibling:
        argv.append("--restore-sibling")
    keep = ()
    if console:
        tty, fd = console
        argv += ["--inherit-fd", f"fd[{fd}]:{tty}",
                 "--ext-mount-map", f"{CONSOLE_KEY}:{os.ttyname(fd)}"]
        keep = (fd,)
    _run("restore", argv, images / RESTORE_LOG, keep)
    return int(pidfile.read_text().strip())


def _run(verb, argv, log_path, keep_fds=()):
    started = time.monotonic()
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=TIMEOUT, pass_fds=keep_fds)
    except FileNotFoundError as exc:
        raise CriuFailed(verb, f"{argv[0]} is not installed (make criu)", None) from exc
    except subprocess.TimeoutExpired as exc:
        raise CriuFailed(verb, f"still running after {TIMEOUT} s", log_path) from exc
    if done.returncode != 0:
        raise CriuFailed(verb, cause(log_path, done.stderr.decode(errors="replace")), log_path)
    return time.monotonic() - started


def cause(log_path, stderr=""):
    """The first error of a criu log that is not noise, in a person's words."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        text = stderr
    for line in text.splitlines():
        found = _ERROR.search(line)
        if found and not _NOISE.search(line):
            return found.group(2).strip()
    return (stderr.strip().splitlines() or ["no error in its log"])[-1]


def _frozen_ms(images):
    """The time the tree was frozen, from criu's stats-dump (None if unreadable)."""
    try:
        raw = (images / "stats-dump").read_bytes()
    except OSError:
        return None
    frozen_us = _stats_field(raw, 2)
    return None if frozen_us is None else frozen_us // 1000


def _stats_field(raw, number):
    """Field ``number`` of the DumpStatsEntry in criu's stats image (1 freezing_time,
    2 frozen_time, in µs; criu's images/stats.proto).

    The image is two magic words, a length and a protobuf message whose first
    member (StatsEntry.dump) holds the dump's stats; enough protobuf to read
    one varint out of it.
    """
    try:
        body = raw[8:]
        length = int.from_bytes(body[:4], "little")
        message = body[4:4 + length]
        inner = _field(message, 1)
        return _varint_field(inner, number) if inner is not None else None
    except (IndexError, ValueError):
        return None


def _varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data):
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, at = _varint(data, at)
        elif kind == 2:
            size, at = _varint(data, at)
            value, at = data[at:at + size], at + size
        elif kind == 1:
            value, at = data[at:at + 8], at + 8
        elif kind == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise ValueError(f"protobuf wire type {kind}")
        yield number, value


def _field(data, number):
    return next((value for n, value in _fields(data) if n == number), None)


def _varint_field(data, number):
    value = _field(data, number)
    return value if isinstance(value, int) else None

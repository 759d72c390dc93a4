"""The node's backup repository: restic (Debian's package), run with argument lists.

A repository is deduplicated, compressed (restic >= 0.14 format 2), encrypted
and incremental. It is a local directory by default and anything restic
takes by URL in production (``sftp:user@host:/path``, ``s3:https://...``):
VE_BACKUP_REPO. Its password is in a file (VE_BACKUP_PASSWORD_FILE), made
with the repository when none exists: whoever holds it can read every backup,
so it is root's only, and staff keep a copy off the node (docs/storage.md).

Each backup is a restic snapshot tagged ``ve=<VEID>`` and ``base=<host uid of
the VE's root>`` (the files keep the host's uids: a restore into a VE of
another uid range shifts them).
"""

import errno
import json
import os
import posixpath
import secrets
import shutil
import subprocess
import time
from collections import namedtuple

RESTIC = "restic"
IDLE = ("ionice", "-c", "3", "nice", "-n", "19")  # util-linux and coreutils
TIMEOUT = 24 * 3600  # a first backup of a large VE over a slow link
TICK = 1.0  # seconds between the progress reports of a restore


class Repository(namedtuple("Repository", "url password_file")):
    """Where the backups are (a path or restic URL) and the file holding its password."""

    __slots__ = ()

    def env(self):
        return {"RESTIC_REPOSITORY": self.url, "RESTIC_PASSWORD_FILE": self.password_file,
                "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "HOME": os.environ.get("HOME", "/root"),
                "RESTIC_CACHE_DIR": os.path.join(os.path.dirname(self.password_file),
                                                 "cache")}


class ResticFailed(OSError):
    """restic exited non-zero; ``cause`` is its last complaint."""

    def __init__(self, verb, cause):
        super().__init__(errno.EIO, f"restic {verb} failed: {cause}")
        self.cause = cause


def ensure(repo):
    """Make the password file and the repository if they do not exist yet."""
    if not os.path.exists(repo.password_file):
        os.makedirs(os.path.dirname(repo.password_file), mode=0o700, exist_ok=True)
        fd = os.open(repo.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    if _run(repo, ["cat", "config"], ok_missing=True) is None:
        _run(repo, ["init"])


def backup(repo, path, tags, host, on_status=None, limit_kib=0):
    """Back up directory ``path``, whose contents become the snapshot's root (``/``);
    return restic's summary (snapshot_id, files_new, data_added, ...).
    ``on_status(fraction_done)`` is called as restic reports progress."""
    argv = ["backup", "--json", "--host", host, "--one-file-system"]
    for tag in tags:
        argv += ["--tag", tag]
    if limit_kib:
        argv += ["--limit-upload", str(limit_kib)]
    summary = None
    # At idle I/O and CPU priority: the VEs' own disk work goes first (bandwidth is
    # limit_kib's; the I/O class counts where the disk's scheduler honours it).
    for message in _stream(repo, argv + ["."], cwd=path, prefix=IDLE):
        if message.get("message_type") == "status" and on_status:
            on_status(float(message.get("percent_done") or 0))
        elif message.get("message_type") == "summary":
            summary = message
    if summary is None:
        raise ResticFailed("backup", "no summary")
    return summary


def snapshots(repo, tags=()):
    """The repository's snapshots with all of ``tags``, oldest first."""
    argv = ["snapshots", "--json"]
    if tags:
        argv += ["--tag", ",".join(tags)]
    return json.loads(_run(repo, argv) or "[]") or []


def restore(repo, snapshot_id, target, include=None, on_status=None):
    """Restore snapshot ``snapshot_id`` (only ``include``, a path in it, if given) into
    directory ``target``.

    ``on_status(fraction_done)`` is called each TICK. restic 0.14 prints no restore
    progress, and it preallocates each file it makes (the target's free space tells
    nothing), so the fraction is what restic wrote (its /proc/PID/io) against the
    snapshot's size."""
    argv = ["restore", snapshot_id, "--target", target]
    if include:
        argv += ["--include", include]
    if on_status is None:
        _run(repo, argv)
        return
    try:
        total = restore_size(repo, snapshot_id)
    except (ResticFailed, OSError, ValueError):
        total = 0  # no progress to show; the restore itself goes on

    def tick(proc):
        written = _written_bytes(proc.pid)
        on_status(min(0.99, written / total) if total else 0.0)

    _run(repo, argv, every=tick)


def restore_size(repo, snapshot_id):
    """The bytes of the files snapshot ``snapshot_id`` holds (what a restore writes)."""
    argv = ["stats", "--json", "--mode", "restore-size", snapshot_id]
    return int(json.loads(_run(repo, argv)).get("total_size") or 0)


def listing(repo, snapshot_id, path="/"):
    """The entries of directory ``path`` of a snapshot: [{name, type, size, mtime}]."""
    wanted = posixpath.normpath("/" + path.strip("/"))
    entries = []
    for line in _run(repo, ["ls", "--json", snapshot_id, wanted]).splitlines():
        item = json.loads(line)
        if item.get("struct_type") == "node" and item["path"] != wanted \
                and posixpath.dirname(item["path"]) == wanted:
            entries.append({"name": item["name"], "type": item["type"],
                            "size": item.get("size", 0), "mtime": item.get("mtime")})
    return entries


def dump(repo, snapshot_id, path, out):
    """Write file ``path`` of a snapshot to ``out`` (any binary file object)."""
    proc = _popen(repo, ["dump", snapshot_id, path], text=False)
    with proc:
        shutil.copyfileobj(proc.stdout, out, 1 << 20)
        error = proc.stderr.read().decode(errors="replace")
    if proc.returncode:
        raise ResticFailed("dump", _last_line(error))


def forget(repo, tags, keep_daily, keep_weekly):
    """Drop the snapshots with ``tags`` that the policy does not keep, and their data."""
    _run(repo, ["forget", "--tag", ",".join(tags), "--keep-daily", str(keep_daily),
                "--keep-weekly", str(keep_weekly), "--prune"])


def forget_ids(repo, ids):
    """Drop these snapshots and their data."""
    _run(repo, ["forget", "--prune", *ids])


def check(repo, read_data=False):
    """Verify the repository's structure (and, ``read_data``, every pack's content);
    ResticFailed says what is wrong."""
    _run(repo, ["check"] + (["--read-data"] if read_data else []))


def stats(repo, tags=()):
    """{"total_size", "total_uncompressed_size", ...} of the data stored (of the
    snapshots with all of ``tags``: what they hold, shared between them counted once)."""
    argv = ["stats", "--json", "--mode", "raw-data"]
    for tag in tags:
        argv += ["--tag", tag]
    return json.loads(_run(repo, argv))


def _run(repo, argv, ok_missing=False, every=None):
    """restic's output of ``argv``; ``every(proc)`` is called each TICK while it runs."""
    proc = _popen(repo, argv)
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            try:
                # A communicate that timed out may be called again: no output is lost.
                out, error = proc.communicate(timeout=TICK if every else TIMEOUT)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise ResticFailed(argv[0], f"still running after {TIMEOUT} s") from None
                every(proc)
    except BaseException:  # timed out, or the caller's report failed: restic ends too
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        raise
    if proc.returncode:
        if ok_missing:
            return None
        raise ResticFailed(argv[0], _last_line(error))
    return out


def _stream(repo, argv, cwd=None, prefix=()):
    """Run restic with ``argv`` (after the ``prefix`` command), yielding each JSON line
    it prints."""
    proc = _popen(repo, argv, cwd=cwd, prefix=prefix)
    with proc:
        for line in proc.stdout:
            try:
                yield json.loads(line)
            except ValueError:
                continue
        error = proc.stderr.read()
    if proc.returncode:
        raise ResticFailed(argv[0], _last_line(error))


def _popen(repo, argv, cwd=None, text=True, prefix=()):
    """restic ``argv`` started on ``repo``, its output and errors piped."""
    try:
        return subprocess.Popen([*prefix, RESTIC, *argv], env=repo.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=text, cwd=cwd)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "restic is missing (Debian package restic)") from None


def _written_bytes(pid):
    """The bytes process ``pid`` passed to write calls so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as io:
            for line in io:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _last_line(text):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"

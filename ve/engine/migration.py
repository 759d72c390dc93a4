"""Moving a VE to another node: rsync over SSH to the node's receiver, then CRIU.

Live (the default): the disk is copied while the VE runs; then the VE is
checkpointed and stopped (it is frozen from here), the disk synced again with
the checkpoint, and the target restores it. Offline (``live=False``, or when a
checkpoint is refused for this VE, said so in the result): stop, sync, start
on the target. The VE runs on exactly one node at any moment. If any step
fails, the target forgets what it got and the VE comes back here (restored
from its checkpoint, or started) before the error is raised.

The channel is the target's migration sshd (``ve/migrate``), reached with this
node's key and a host key recorded beforehand; on one machine the simulated
nodes use the same path.
"""

import json
import os
import shutil
import subprocess
import time

from .. import validate
from ..errors import ResourceError, Unsupported, VEError
from ..log import get as get_logger
from .timeouts import STOP_TIMEOUT

log = get_logger(__name__)

RSYNC_TIMEOUT = 3600
VERB_TIMEOUT = 600


class MigrationFailed(ResourceError):
    """The move failed; ``came_back`` says whether the VE runs here again."""


class MigrateMixin:
    """``migrate`` of the Engine (the lock-free steps of checkpoint, restore, start,
    stop and destroy, under one hold of the VE's lock)."""

    def migrate(self, veid, target, live=True):
        """Move VE ``veid`` to the node whose migration sshd is ``target`` (host:port).

        Return a dict: mode ("live" or "offline"), why_offline, downtime_s (the VE
        ran nowhere), total_s, precopy_s, phases_s (the downtime's parts), sent
        (bytes: "disk" data in all, "checkpoint" images). Raise
        MigrationFailed, with the VE back here as it was (running or stopped), when a
        step fails. The VE's lock is held
        throughout: nothing else here may start it meanwhile.
        """
        veid = validate.veid(veid)
        with self._lock(veid):
            return self._migrate(self._read_config(veid), _Channel(self.layout, target), live)

    def _migrate(self, cfg, channel, live):
        veid, started = cfg.veid, time.monotonic()
        record = self._running_init(veid)
        was_running = record is not None
        why_offline = None if live or not was_running else "asked for"
        if was_running and live:
            from .checkpoint import undumpable
            why_offline = undumpable(self.cgroups.pids(str(veid)), record.pid)
        mode = "live" if was_running and why_offline is None else "offline"
        channel.verb("begin", veid)
        try:
            self._send_disk(channel, cfg)  # pre-copy, while it runs
        except ResourceError as exc:
            channel.abort(veid)
            raise MigrationFailed(f"migration failed before the VE stopped: {exc.message}; "
                                  "it runs on here", veid) from exc
        precopy = time.monotonic() - started
        frozen = time.monotonic()
        phases = _Phases()
        if mode == "live":
            try:
                with phases("checkpoint"):
                    self._checkpoint(veid, stop=True)
            except (Unsupported, ResourceError) as exc:
                if self._running_init(veid) is None:
                    channel.abort(veid)
                    raise MigrationFailed(f"checkpoint failed: {exc.message}", veid) from exc
                mode, why_offline = "offline", exc.message
                frozen = time.monotonic()
        if mode == "offline" and was_running:
            with phases("stop"):
                self._stop(veid, STOP_TIMEOUT, fast=False)
        try:
            with phases("disk"):
                self._send_disk(channel, cfg)
            with phases("state"):
                self._send_state(channel, veid, with_checkpoint=mode == "live")
            with phases("restore" if mode == "live" else "start"):
                if not was_running:
                    channel.verb("place", veid)  # it stays stopped, there
                else:
                    channel.verb("restore" if mode == "live" else "start", veid)
        except ResourceError as exc:
            channel.abort(veid)
            how = mode + (f", {why_offline}" if mode == "offline" and why_offline else "")
            raise MigrationFailed(f"migration ({how}) failed: {exc.message}; "
                                  f"{self._come_back(cfg, mode, was_running)}", veid) from exc
        downtime = time.monotonic() - frozen
        self._destroy(veid, 0)  # its files, checkpoint and host side here
        total = time.monotonic() - started
        log.info("VE %s moved to %s (%s) in %.1f s, %.2f s of downtime", veid,
                 channel.target, mode, total, downtime)
        return {"mode": mode, "why_offline": why_offline,
                "downtime_s": round(downtime, 3) if was_running else None,
                "total_s": round(total, 3), "precopy_s": round(precopy, 3),
                "phases_s": phases.seconds, "sent": channel.sent}

    def _send_disk(self, channel, cfg):
        """The disk: a directory by rsync; an image by its changed chunks, which reads
        only the data it holds and trusts no file time (``ve/migrate/blocks.py``)."""
        veid = cfg.veid
        if cfg.layout == "dir":
            channel.rsync([str(self.layout.private(veid)) + "/"], f"{veid}/private/",
                          tree=True)
        else:
            channel.image(self.layout.image(veid), veid)

    def _send_state(self, channel, veid, with_checkpoint):
        """The config, traffic totals and (live) the checkpoint, in one rsync (one SSH
        handshake less each, while the VE is down): hard links in outgoing/VEID."""
        out = self.layout.root / "outgoing" / str(veid)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, mode=0o700)
        try:
            os.link(self.layout.conf(veid), out / "conf")
            if self.layout.counters(veid).exists():
                os.link(self.layout.counters(veid), out / "counters")
            if with_checkpoint:
                dump = self.layout.dump(veid)
                (out / "dump").mkdir()
                os.chmod(out / "dump", os.stat(dump).st_mode & 0o7777)  # 0711, see checkpoint
                for image in dump.iterdir():
                    os.link(image, out / "dump" / image.name)
                    channel.sent["checkpoint"] += image.stat().st_size
            channel.rsync([f"{out}/"], f"{veid}/")
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def _come_back(self, cfg, mode, was_running):
        """After a failed move: the VE runs here again if it ran (from its checkpoint,
        if it has one). Return what became of it, for the error."""
        if not was_running:
            return "the VE stays here, stopped"
        try:
            if mode == "live":
                self._restore(cfg)
            else:
                self._start(cfg)
        except VEError as exc:
            log.error("VE %s: failed to move and to come back: %s", cfg.veid, exc)
            return f"and it could not run here again ({exc.message}): start it"
        return "the VE is back on this node"


class _Phases:
    """Seconds spent in each named step (``with phases("disk"): ...``)."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, name):
        import contextlib

        @contextlib.contextmanager
        def timed():
            began = time.monotonic()
            try:
                yield
            finally:
                self.seconds[name] = round(time.monotonic() - began, 3)
        return timed()


class _Channel:
    """rsync and verbs to one target node's receiver, over its migration sshd."""

    def __init__(self, layout, target):
        from ..migrate import identity
        self.target = target
        self.ssh = identity.ssh_command(layout, target)
        self.sent = {"disk": 0, "checkpoint": 0}  # bytes, for the result

    def rsync(self, sources, destination, tree=False):
        argv = ["rsync", "--archive", "--numeric-ids", "--sparse", "--partial",
                "--timeout=60", "-e", " ".join(self.ssh[:-1])]
        if tree:
            argv += ["--hard-links", "--acls", "--xattrs", "--delete"]
        argv += [*sources, f"{self.ssh[-1]}:{destination}"]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=RSYNC_TIMEOUT)
        if done.returncode != 0:
            raise ResourceError(f"copy to {self.target} failed: "
                                f"{_first_error(done.stderr) or done.returncode}")

    def verb(self, verb, veid):
        try:
            done = subprocess.run([*self.ssh, f"{verb} {veid}"], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=VERB_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise ResourceError(f"{self.target} did not answer {verb} within "
                                f"{VERB_TIMEOUT} s", veid) from exc
        return self._answer(done.stdout, done.stderr, verb, veid)

    def _answer(self, stdout, stderr, verb, veid):
        try:
            answer = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            answer = {"ok": False, "error": _last_line(stderr) or "no answer"}
        if not answer.get("ok"):
            raise ResourceError(f"{self.target}: {verb}: {answer.get('error')}", veid)
        return answer

    def image(self, path, veid):
        """Bring the target's copy of disk image ``path`` up to date, chunk by chunk."""
        from ..migrate import blocks
        theirs = self.verb("digests", veid)
        patch = subprocess.Popen([*self.ssh, f"patch {veid}"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            self.sent["disk"] += blocks.send(path, theirs, patch.stdin)
            patch.stdin.close()
            patch.stdin = None  # closed: communicate() must not flush it
        except (OSError, ValueError) as exc:
            patch.kill()
            patch.wait()
            raise ResourceError(f"copy of the disk to {self.target} failed: {exc}", veid) from exc
        out, err = patch.communicate(timeout=VERB_TIMEOUT)
        self._answer(out.decode(), err.decode(), "patch", veid)

    def abort(self, veid):
        try:
            self.verb("abort", veid)
        except ResourceError as exc:
            log.warning("VE %s: the target kept what it got (%s)", veid, exc.message)


def _first_error(text):
    """rsync's first complaint (its last line only says that there were some)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("rsync:")), lines[-1] if lines
                else "")


def _last_line(text):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""

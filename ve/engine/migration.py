"""Moving a VE to another node: rsync over SSH to the node's receiver, then CRIU.

Live (the default): the disk is copied while the VE runs; then the VE is
checkpointed and stopped (it is frozen from here), the disk synced again with
the checkpoint, and the target restores it. Offline (``live=False``, or when a
checkpoint is refused for this VE, said so in the result): stop, sync, start
on the target. The VE runs on exactly one node at any moment. If any step
fails, the target forgets what it got and the VE comes back here (restored
from its checkpoint, or started) before the error is raised.

While a move is under way, VE_ROOT/outgoing/VEID.json says where to and how
far it got. If the process moving it dies (kill -9 of a node's worker), the
next ``migrate`` or ``settle_migration`` of that VE finishes the move (the
target runs it: the copy here goes) or rolls it back (the target forgets it and
the VE runs here again): never on two nodes, never on none.

The channel is the target's migration sshd (``ve/migrate``), reached with this
node's key and a host key recorded beforehand; on one machine the simulated
nodes use the same path.
"""

import json
import os
import time

from .. import validate
from ..errors import ResourceError, StateError, Unsupported, VEError
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

    def migrate(self, veid, target, live=True, start_there=False):
        """Move VE ``veid`` to the node whose migration sshd is ``target`` (host:port).
        A stopped VE stays stopped there, or is started there with ``start_there`` (a VE
        made here to run there: a VPS restored from this node's backups).

        Return a dict: mode ("live" or "offline"), why_offline, downtime_s (the VE
        ran nowhere), total_s, precopy_s, phases_s (the downtime's parts), sent
        (bytes: "disk" data in all, "checkpoint" images). Raise
        MigrationFailed, with the VE back here as it was (running or stopped), when a
        step fails. The VE's lock is held
        throughout: nothing else here may start it meanwhile.
        """
        veid = validate.veid(veid)
        with self._lock(veid):
            if self._settle(veid) == "there":
                return {"mode": "settled", "why_offline": None, "downtime_s": None,
                        "total_s": 0.0, "precopy_s": 0.0, "phases_s": {}}
            return self._migrate(self._read_config(veid), _Channel(self.layout, target), live,
                                 start_there)

    def status_at(self, veid, target):
        """What the node at ``target`` has of VE ``veid``: {"exists", "running"}
        (ResourceError if it cannot be asked)."""
        veid = validate.veid(veid)
        channel = _Channel(self.layout, target)
        try:
            answer = channel.verb("status", veid)
        finally:
            channel.close()
        return {"exists": bool(answer.get("exists")), "running": bool(answer.get("running"))}

    def migration_in_flight(self, veid):
        """Where an unfinished move of ``veid`` was going (its record), or None."""
        return _InFlight(self.layout, validate.veid(veid)).read()

    def settle_migration(self, veid):
        """Finish or roll back a move of ``veid`` that was cut off (its mover died).

        Return "there" (the target runs it; nothing of it is left here), "here"
        (it is here again, running if it ran) or None (no move was under way).
        Raise MigrationFailed, changing nothing, if the target cannot be asked.
        """
        veid = validate.veid(veid)
        with self._lock(veid):
            return self._settle(veid)

    def _refuse_if_moving(self, veid):
        """A stopped VE whose move was cut off may run at the target already: starting
        it here could make two. Settling decides (StateError until then)."""
        record = _InFlight(self.layout, veid).read()
        if record and self._running_init(veid) is None:
            raise StateError(f"a move of this VE to {record['target']} was cut off; "
                             "`vectl migration settle` (or migrating it again) finishes or "
                             "rolls it back first", veid)

    def _settle(self, veid):
        flight = _InFlight(self.layout, veid)
        record = flight.read()
        if record is None:
            return None
        channel = _Channel(self.layout, record["target"])
        try:
            return self._settle_with(veid, flight, record, channel)
        finally:
            channel.close()

    def _settle_with(self, veid, flight, record, channel):
        try:
            theirs = channel.verb("status", veid)
        except ResourceError as exc:
            raise MigrationFailed(f"an earlier move to {record['target']} was cut off and "
                                  f"that node cannot be asked how far it got: {exc.message}",
                                  veid) from exc
        if theirs.get("exists") and (theirs.get("running") or not record["was_running"]):
            log.warning("VE %s: the cut-off move to %s had finished there; removing it here",
                        veid, record["target"])
            if self.layout.conf(veid).exists():
                self._destroy(veid, 0)
            flight.clear()
            return "there"
        channel.abort(veid)
        if self.layout.conf(veid).exists() and record["was_running"] \
                and self._running_init(veid) is None:
            log.warning("VE %s: the cut-off move to %s is rolled back; it runs here again",
                        veid, record["target"])
            self._start(self._read_config(veid))  # resumes from the checkpoint if it has one
        flight.clear()
        return "here"

    def _migrate(self, cfg, channel, live, start_there=False):
        veid, started = cfg.veid, time.monotonic()
        record = self._running_init(veid)
        was_running = record is not None
        why_offline = None if live or not was_running else "asked for"
        if was_running and live:
            from .checkpoint import undumpable
            why_offline = undumpable(self.cgroups.pids(str(veid)), record.pid)
        mode = "live" if was_running and why_offline is None else "offline"
        flight = _InFlight(self.layout, veid)
        flight.write(target=channel.target, was_running=was_running)
        try:
            channel.verb("begin", veid)
        except ResourceError as exc:
            flight.clear()
            raise MigrationFailed(f"{channel.target} refused the VE: {exc.message}", veid) \
                from exc
        try:
            if cfg.shared_template:
                self._send_layer(channel, cfg)  # once: it never changes
            self._send_disk(channel, cfg)  # pre-copy, while it runs
            self._send_snapshots(channel, veid)
        except ResourceError as exc:
            channel.abort(veid)
            flight.clear()
            raise MigrationFailed(f"migration failed before the VE stopped: {exc.message}; "
                                  "it runs on here", veid) from exc
        precopy = time.monotonic() - started
        from ..migrate import warm_imports
        from ..migrate.ahead import PagesAhead  # on use: a start needs none of it
        warm_imports()
        frozen = time.monotonic()
        phases = _Phases()
        ahead, sent_ahead = PagesAhead(channel, veid), {}
        if mode == "live":
            try:
                with phases("checkpoint"):
                    try:
                        self._checkpoint(veid, stop=True, dumping=ahead.start)
                    finally:
                        sent_ahead = ahead.finish()  # what criu wrote goes on to the end
            except (Unsupported, ResourceError) as exc:
                if self._running_init(veid) is None:
                    channel.abort(veid)
                    flight.clear()
                    raise MigrationFailed(f"checkpoint failed: {exc.message}", veid) from exc
                mode, why_offline = "offline", exc.message
                frozen = time.monotonic()
        if mode == "offline" and was_running:
            with phases("stop"):
                self._stop(veid, STOP_TIMEOUT, fast=False)
        try:
            with phases("disk"):
                if was_running:  # its filesystem must be gone, all written, first
                    self._disk_released(cfg)
                self._send_disk(channel, cfg)
            with phases("state"):
                # A hibernated VE (stopped, its memory saved) takes its image along.
                self._send_state(channel, veid, with_checkpoint=mode == "live" or (
                    not was_running and self.hibernated(veid)), sent_ahead=sent_ahead)
            with phases("restore" if mode == "live" else "start"):
                if not was_running:  # it stays stopped there, or starts there afresh
                    channel.verb("start" if start_there else "place", veid)
                else:
                    channel.verb("restore" if mode == "live" else "start", veid)
        except ResourceError as exc:
            channel.abort(veid)
            how = mode + (f", {why_offline}" if mode == "offline" and why_offline else "")
            came_back = self._come_back(cfg, mode, was_running)
            flight.clear()
            raise MigrationFailed(f"migration ({how}) failed: {exc.message}; {came_back}",
                                  veid) from exc
        downtime = time.monotonic() - frozen
        self._destroy(veid, 0)  # its files, checkpoint and host side here
        flight.clear()
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

    def _send_layer(self, channel, cfg):
        """A shared-template VE's image is only its own files: the target needs the
        template's layer too. It has it, or makes it from its own copy of that very
        template tarball, or else gets this one (kept apart from its own layers:
        used by the VEs that come with it only)."""
        from ..storage import layers
        layer_id = self._layer_of(cfg)
        answer = channel.request(cfg.veid, {"verb": "layer", "id": layer_id})
        if not answer.get("have"):
            channel.rsync([f"{layers.find(self.layout, layer_id)}/"], f"{cfg.veid}/layer/",
                          tree=True)

    def _send_snapshots(self, channel, veid):
        """The VE's snapshots, once (they never change): each image by its chunks that
        differ from the VE's (the target starts it as a reflink of that), then their
        records."""
        folder = self.layout.snapshots(veid)
        records = sorted(folder.glob("*.json")) if folder.is_dir() else []
        for record in records:
            channel.image(record.with_suffix(".img"), veid, snapshot=record.stem)
        if records:
            channel.send_files(veid, [(f"snapshots/{r.name}", r) for r in records])

    def _send_state(self, channel, veid, with_checkpoint, sent_ahead):
        """The config, traffic totals and (live) the checkpoint images, through the
        channel's session: no SSH handshake nor rsync start while the VE is down.
        ``sent_ahead``: {name: size} of the images the target has already (pages
        sent while criu wrote them)."""
        files = [("conf", self.layout.conf(veid))]
        if self.layout.counters(veid).exists():
            files.append(("counters", self.layout.counters(veid)))
        if with_checkpoint:
            files += [(f"dump/{image.name}", image)
                      for image in sorted(self.layout.dump(veid).iterdir()) if image.is_file()
                      and sent_ahead.get(f"dump/{image.name}") != image.stat().st_size]
        sizes = channel.send_files(veid, files)
        channel.sent["checkpoint"] += sum(size for (name, _), size in zip(files, sizes)
                                          if name.startswith("dump/")) + sum(sent_ahead.values())

    def _come_back(self, cfg, mode, was_running):
        """After a failed move: the VE runs here again if it ran (from its checkpoint,
        if it has one). Return what became of it, for the error."""
        if not was_running:
            return "the VE stays here, stopped"
        try:
            if mode == "live":
                try:
                    self._restore(cfg)
                except VEError as exc:  # never left stopped: a fresh start beats none
                    log.warning("VE %s: not restored here either (%s); starting it afresh",
                                cfg.veid, exc.message)
                    self._start(cfg)  # the resume fails alike, then it boots
                    return (f"it could not be restored here either ({exc.message}); it was "
                            "started afresh, its checkpoint kept")
            else:
                self._start(cfg)
        except VEError as exc:
            log.error("VE %s: failed to move and to come back: %s", cfg.veid, exc)
            return f"and it could not run here again ({exc.message}): start it"
        return "the VE is back on this node"


class _InFlight:
    """The record of a move under way: VE_ROOT/outgoing/VEID.json (target, was_running)."""

    def __init__(self, layout, veid):
        self.path = layout.root / "outgoing" / f"{veid}.json"

    def write(self, **record):
        from ..fsutil import atomic_write
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(record) + "\n")

    def read(self):
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None

    def clear(self):
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


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
    """Requests to one target node's receiver, over its migration sshd: one session
    (one SSH connection, one receiver process) for a move's steps, rsync beside it for
    a directory VE's files.

    The session opens at the first request and closes after the last one a move
    makes (restore, start, place, abort) or after any failure: a request after that
    opens a fresh one.
    """

    TERMINAL = ("restore", "start", "place", "abort")

    def __init__(self, layout, target):
        from ..migrate import identity
        self.target = target
        self.ssh = identity.ssh_command(layout, target)
        self.sent = {"disk": 0, "checkpoint": 0}  # bytes, for the result
        self._session = None
        # The digests of the target's copy of each image, as the last send left it:
        # the final sync (the VE frozen) then need not wait for the target to hash it.
        self._held = {}

    def rsync(self, sources, destination, tree=False):
        import subprocess  # here and below on use: every vectl call loads this module
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
        """Ask the receiver to ``verb`` the VE (begin, restore, ...); return its answer."""
        if verb in ("begin", "abort"):
            self._held.clear()  # the target's incoming copy starts afresh
        answer = self.request(veid, {"verb": verb})
        if verb in self.TERMINAL:
            self.close()
        return answer

    def image(self, path, veid, snapshot=None):
        """Bring the target's copy of disk image ``path`` (of snapshot ``snapshot``, if
        given) up to date, chunk by chunk."""
        from ..migrate import blocks
        about = {"snapshot": snapshot} if snapshot else {}
        theirs = self._held.pop(str(path), None) or \
            self.request(veid, {"verb": "digests", **about})
        now, sent = {}, []

        def stream(out):
            sent.append(blocks.send(path, theirs, out, now))
        self.request(veid, {"verb": "patch", **about}, stream)
        self.sent["disk"] += sent[0]
        self._held[str(path)] = now

    def send_files(self, veid, files):
        """Send ``files`` ([(name, path)]: names the receiver takes, see receive.py's
        STATE_FILE) into the VE's incoming directory, with their modes (within 0644);
        return their sizes."""
        opened = []
        try:
            try:
                opened += [open(path, "rb") for _, path in files]
            except OSError as exc:
                raise ResourceError(f"cannot read the VE's state: {exc}", veid) from exc
            stats = [os.fstat(f.fileno()) for f in opened]
            sizes = [st.st_size for st in stats]

            def stream(out):
                out.flush()
                for f, size in zip(opened, sizes):
                    _sendfile(out.fileno(), f.fileno(), size)
            self.request(veid, {"verb": "state", "files": [
                [name, st.st_size, st.st_mode & 0o644] for (name, _), st in zip(files, stats)]},
                stream)
        finally:
            for f in opened:
                f.close()
        return sizes

    def abort(self, veid):
        try:
            self.verb("abort", veid)
        except ResourceError:
            try:  # the session may be what failed: once more on a fresh one
                self.verb("abort", veid)
            except ResourceError as exc:
                log.warning("VE %s: the target kept what it got (%s)", veid, exc.message)

    def close(self):
        """End the session (the receiver exits when its input ends)."""
        session, self._session = getattr(self, "_session", None), None  # unset if __init__ failed
        if session:
            session.close()

    __del__ = close

    def request(self, veid, request, payload=None):
        """Send ``request`` (and what ``payload(stream)`` writes) on the session; return
        the answer, or raise ResourceError (the session is then closed)."""
        import subprocess
        if self._session is None or self._session.veid != veid:
            self.close()
            self._session = _Session(self.ssh, veid)
        try:
            answer = self._session.request(request, payload)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            why = self._session.error() or exc
            self.close()
            raise ResourceError(f"{self.target}: {request['verb']}: {why}", veid) from exc
        if not answer.get("ok"):
            self.close()
            raise ResourceError(f"{self.target}: {request['verb']}: {answer.get('error')}",
                                veid)
        return answer


class _Session:
    """One ``session VEID`` connection to a receiver: framed requests, framed answers
    (ve/migrate/receive.py)."""

    def __init__(self, ssh, veid):
        import subprocess
        import tempfile
        self.veid = veid
        self.errors = tempfile.TemporaryFile()  # ssh's and the receiver's stderr, unbounded
        self.proc = subprocess.Popen([*ssh, f"session {veid}"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors)

    def request(self, request, payload=None, timeout=VERB_TIMEOUT):
        """Send ``request`` (then what ``payload(stream)`` writes); return the answer."""
        from ..migrate import receive
        try:
            receive.write_frame(self.proc.stdin, request)
            if payload:
                payload(self.proc.stdin)
                self.proc.stdin.flush()
        except BrokenPipeError:
            timeout = 5  # it stopped reading: its refusal may be waiting, say why
        answer = receive.read_frame(_Deadline(self.proc.stdout.fileno(), timeout),
                                    receive.MAX_ANSWER)
        if answer is None:
            raise ValueError("the receiver ended the session")
        return answer

    def error(self):
        """The last line the other end wrote on stderr, if any."""
        self.errors.seek(0)
        return _last_line(self.errors.read().decode(errors="replace"))

    def close(self):
        import subprocess
        try:
            self.proc.stdin.close()
        except OSError:
            pass  # it is gone already
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.errors.close()


class _Deadline:
    """A readable pipe whose reads give up (TimeoutExpired) ``timeout`` seconds on."""

    def __init__(self, fd, timeout):
        self.fd, self.timeout = fd, timeout
        self.deadline = time.monotonic() + timeout

    def read(self, count):
        import select
        import subprocess
        left = self.deadline - time.monotonic()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            raise subprocess.TimeoutExpired("migration receiver", self.timeout)
        return os.read(self.fd, count)


def _sendfile(out, source, size):
    """Copy ``size`` bytes of file ``source`` to ``out`` (a pipe) in the kernel."""
    offset = 0
    while offset < size:
        done = os.sendfile(out, source, offset, size - offset)
        if done == 0:
            raise ValueError("a state file shrank while it was sent")
        offset += done


def _first_error(text):
    """rsync's first complaint (its last line only says that there were some)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("rsync:")), lines[-1] if lines
                else "")


def _last_line(text):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""

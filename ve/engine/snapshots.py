"""Disk snapshots: a VE's disk image kept as it was at one moment, to roll back to.

A snapshot of a running VE is consistent: its processes are frozen (cgroup
freezer) and its filesystem too (FIFREEZE: everything written into the image)
for the moment of the copy, most dirty data having been written out before
the freeze. On a host filesystem with reflinks (XFS, btrfs) the copy shares
every block with the image and the freeze lasts milliseconds; elsewhere it is
a full copy of the image's data, made with the processes running again but
the filesystem still frozen (their writes wait until it is done): the
snapshot's ``method`` says which.

Rolling back stops the VE (cleanly), puts the snapshot's copy in place of the
image and starts it again if it ran. Snapshots live in VE_ROOT/snapshots/VEID
(NAME.img, NAME.json) and go with the VE: ``destroy`` removes them.
"""

import contextlib
import json
import os
import time

from .. import validate
from ..config import DIRECTORY
from ..errors import AlreadyExists, InvalidConfig, NotFound, ResourceError, Unsupported
from ..fsutil import atomic_write
from ..log import get as get_logger
from .timeouts import STOP_TIMEOUT

log = get_logger(__name__)


class SnapshotMixin:
    """snapshot, snapshots, rollback and snapshot_delete of the Engine."""

    def snapshot(self, veid, name=None):
        """Take a snapshot of the VE's disk (running or not); return its record:
        name, created, method, frozen_ms (processes frozen), blocked_ms (writes
        waited), size (the image's), seconds."""
        veid = validate.veid(veid)
        name = validate.snapshot_name(name) if name else _default_name()
        with self._lock(veid):
            cfg = self._snapshottable(veid)
            folder = self.layout.snapshots(veid)
            if (folder / f"{name}.json").exists():
                raise AlreadyExists(f"the VE has a snapshot named {name!r}", veid)
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            started = time.monotonic()
            target = folder / f"{name}.img"
            _remove(target)  # left by a crash before its record was written
            try:
                method, frozen, blocked = self._disk_copy(cfg, target)
                record = {"name": name, "created": round(time.time(), 3), "method": method,
                          "frozen_ms": frozen, "blocked_ms": blocked,
                          "size": target.stat().st_size, "diskinodes": cfg.limits.diskinodes,
                          "layout": cfg.layout, "usage": list(self.disk_usage(veid)),
                          "seconds": round(time.monotonic() - started, 3)}
                atomic_write(folder / f"{name}.json", json.dumps(record) + "\n")
            except (OSError, ResourceError) as exc:
                _remove(target)  # no copy without its record
                if isinstance(exc, ResourceError):
                    raise
                raise ResourceError(f"cannot take the snapshot: {exc}", veid) from exc
        log.info("VE %s: snapshot %s taken (%s) in %.2f s, frozen %s ms", veid, name, method,
                 record["seconds"], frozen)
        return record

    def snapshots(self, veid):
        """The VE's snapshots, oldest first, each with ``exclusive_bytes``: the space
        it holds that the image and the other snapshots do not share."""
        veid = validate.veid(veid)
        self._read_config(veid)
        from ..storage import snapshot
        found = []
        for meta in self.layout.snapshots(veid).glob("*.json"):
            record = _read_record(meta)
            if record is None:
                continue
            try:
                record["exclusive_bytes"] = snapshot.exclusive_bytes(meta.with_suffix(".img"))
            except OSError:
                continue  # being deleted
            found.append(record)
        return sorted(found, key=lambda r: (r["created"], r["name"]))

    def rollback(self, veid, name):
        """Put the VE's disk back as snapshot ``name`` left it (the snapshot stays).

        A running VE is stopped first and started again after; a hibernated one
        forgets its checkpoint (its disk moved on). Return {name, restarted, seconds}.
        """
        from ..storage import image
        veid, name = validate.veid(veid), validate.snapshot_name(name)
        with self._lock(veid):
            cfg = self._snapshottable(veid)
            self._refuse_if_moving(veid)
            record = self._snapshot_record(veid, name)
            if record["layout"] != cfg.layout:
                raise InvalidConfig(f"snapshot {name} is of a {record['layout']} disk; the "
                                    f"VE's is {cfg.layout} now", veid)
            used = record["usage"][0]
            if used + image.MIN_FREE > cfg.limits.diskspace:
                raise InvalidConfig(f"snapshot {name} holds {used >> 20} MiB: more than the "
                                    "VE's disk space allows now", veid)
            started = time.monotonic()
            running = self._running_init(veid) is not None
            if running:
                self._stop(veid, STOP_TIMEOUT, fast=False)
            self._discard_checkpoint(veid)
            try:
                self._disk_unmount(cfg)
                self._disk_released(cfg)
                self._put_back(cfg, record)
            finally:
                if running:
                    self._start(cfg)
        seconds = round(time.monotonic() - started, 3)
        log.info("VE %s: rolled back to snapshot %s in %.2f s", veid, name, seconds)
        return {"name": name, "restarted": running, "seconds": seconds}

    def snapshot_delete(self, veid, name):
        """Delete snapshot ``name`` of the VE (NotFound if it has none of that name)."""
        veid, name = validate.veid(veid), validate.snapshot_name(name)
        with self._lock(veid):
            self._snapshot_record(veid, name)
            folder = self.layout.snapshots(veid)
            _remove(folder / f"{name}.json")  # first: a half-deleted one is not listed
            _remove(folder / f"{name}.img")

    # -- steps --------------------------------------------------------------

    def _snapshottable(self, veid):
        cfg = self._read_config(veid)
        if cfg.layout == DIRECTORY:
            raise Unsupported("snapshots need a VE on a disk image (layout image); this "
                              "one's disk is a directory", veid)
        return cfg

    def _snapshot_record(self, veid, name):
        record = _read_record(self.layout.snapshots(veid) / f"{name}.json")
        if record is None:
            raise NotFound(f"the VE has no snapshot named {name!r}", veid)
        return record

    def _disk_copy(self, cfg, target):
        """Copy the VE's image to new file ``target``, consistent whether it runs or
        not (the caller holds its lock); return (method, frozen_ms, blocked_ms)."""
        if self._running_init(cfg.veid) is not None:
            return self._copy_running(cfg, target)
        from ..storage import snapshot
        self._disk_unmount(cfg)  # left by a VE that halted on its own
        return snapshot.clone(self.layout.image(cfg.veid), target), 0, 0

    def _copy_running(self, cfg, target):
        """Copy the running VE's image, frozen; return (method, frozen_ms, blocked_ms)."""
        from ..kernel import libc
        from ..storage import snapshot
        mountpoint, source = self._image_at(cfg), self.layout.image(cfg.veid)
        fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            libc.syncfs(fd)  # most dirty data out before anything is frozen
        finally:
            os.close(fd)
        with contextlib.ExitStack() as frozen:
            began = time.monotonic()
            frozen.enter_context(self.cgroups.frozen(str(cfg.veid)))
            with snapshot.frozen_filesystem(mountpoint):
                if snapshot.reflink(source, target):
                    ms = _ms(began)
                    return snapshot.REFLINK, ms, ms
                frozen.close()  # processes run on; their writes wait for the copy
                thawed = _ms(began)
                snapshot.copy(source, target)
                return snapshot.COPY, thawed, _ms(began)

    def _put_back(self, cfg, record):
        """Replace the stopped VE's image by a copy of snapshot ``record``'s."""
        from ..storage import snapshot
        path = self.layout.image(cfg.veid)
        incoming = path.with_name(f"{path.name}.rollback")
        _remove(incoming)  # left by a crash
        try:
            snapshot.clone(self.layout.snapshots(cfg.veid) / f"{record['name']}.img", incoming)
            os.replace(incoming, path)
        except OSError as exc:
            _remove(incoming)
            raise ResourceError(f"cannot roll back: {exc}", cfg.veid) from exc
        atomic_write(f"{path}.usage", " ".join(map(str, record["usage"])) + "\n",
                     durable=False)
        before = cfg.replace(limits=cfg.limits.replace(diskinodes=record["diskinodes"]))
        self._disk_change(before, cfg, running=False)  # the size it has now, if it changed
        self._disk_unmount(cfg)  # a resize may mount aside


def _default_name():
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _ms(began):
    return round((time.monotonic() - began) * 1000, 1)


def _read_record(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

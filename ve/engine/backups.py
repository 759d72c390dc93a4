"""Backups: a VE's disk saved into the node's restic repository, and restored.

A backup is taken from a snapshot, never from the live tree: the VE is frozen
for the moment of a copy of its image (``SnapshotMixin._disk_copy``: a reflink
where the host can), the copy is mounted read-only aside and restic saves its
files (deduplicated, compressed, encrypted; only what changed since the VE's
last backup is read and stored), then the copy goes. The VE's lock is held
only for the copy: it starts, stops and runs as usual while restic works.

Restoring:

- ``restore_backup``: the whole disk, in place (a running VE is stopped and
  started again; its checkpoint is forgotten);
- ``create_from_backup``: a new VE (another VEID, plan or node) whose disk is
  the backup's, file owners moved to its own uid range;
- ``restore_files``: files or directories of a backup into the running VE, at
  their place or under another directory. They are restored on the host into
  a directory of root's, then unpacked by the VE's own ``tar``, inside it:
  nothing the VE made (a symlink to the host's /etc, say) is followed by host
  root;
- ``backup_listing`` and ``backup_dump``: browse a backup, read one file.

Backups outlive their VE (``destroy`` keeps them): what to keep, and for how
long after a VPS is terminated, is the caller's (``backup_forget``).
"""

import contextlib
import fcntl
import io
import os
import stat
import time

from .. import validate
from ..config import DIRECTORY
from ..errors import (AlreadyExists, InvalidConfig, NotFound, ResourceError, StateError,
                      Unsupported, host_errors)
from ..log import get as get_logger
from ..revert import Reverter
from .timeouts import STOP_TIMEOUT

log = get_logger(__name__)

_HEX_DIGITS = frozenset("0123456789abcdef")  # a backup id: 8 to 64 of them
IDMAP_SIZE = 65536
NOBODY = 65534


class BackupMixin:
    """backup, backups, the restores and the repository's upkeep, of the Engine."""

    def backup_repository(self):
        """The node's repository: VE_BACKUP_REPO (a path or restic URL) and
        VE_BACKUP_PASSWORD_FILE, by default under VE_ROOT/backups."""
        from ..storage import restic
        here = self.layout.root / "backups"
        return restic.Repository(os.environ.get("VE_BACKUP_REPO") or str(here / "repo"),
                                 os.environ.get("VE_BACKUP_PASSWORD_FILE")
                                 or str(here / "password"))

    def backup(self, veid, on_status=None, limit_kib=0):
        """Back up the VE's disk (running or not); return {"id", "time", "files_new",
        "files_changed", "data_added", "total_bytes", "frozen_ms", "seconds"}.
        ``on_status(fraction)`` follows restic's progress; ``limit_kib`` caps its
        upload (KiB/s, 0 = none)."""
        import socket  # on use, like restic: every vectl call loads this module
        from ..storage import restic
        veid = validate.veid(veid)
        began = time.monotonic()
        work = self._backup_dir("work")
        with _only_backup_of(work, veid):
            copy = work / f"{veid}.img"
            _remove(copy)  # a crashed backup's
            with self._lock(veid):
                cfg = self._imaged(veid)
                try:
                    _, frozen, _ = self._disk_copy(cfg, copy)
                except OSError as exc:
                    raise ResourceError(f"cannot copy the disk to back it up: {exc}",
                                        veid) from exc
            try:
                where = self._backup_dir("mnt") / str(veid)  # the same path each time:
                where.mkdir(mode=0o700, exist_ok=True)  # restic finds the last backup by it
                repo = self.backup_repository()
                with host_errors(veid, "the backup failed"), \
                        self._backup_view(cfg, copy, where):
                    restic.ensure(repo)
                    summary = restic.backup(repo, str(where),
                                            (f"ve={veid}", f"base={cfg.idmap_base}"),
                                            socket.gethostname(), on_status, limit_kib)
            finally:
                _remove(copy)
        done = {"id": summary["snapshot_id"], "time": time.time(),
                "files_new": summary.get("files_new", 0),
                "files_changed": summary.get("files_changed", 0),
                "data_added": summary.get("data_added", 0),
                "total_bytes": summary.get("total_bytes_processed", 0),
                "frozen_ms": frozen, "seconds": round(time.monotonic() - began, 3)}
        log.info("VE %s backed up as %s: %s bytes new, in %.1f s", veid, done["id"],
                 done["data_added"], done["seconds"])
        return done

    def backups(self, veid=None):
        """The backups of VE ``veid`` (of every VE if None), oldest first: [{"id",
        "time", "veid"}]. A VE destroyed since still has its backups listed."""
        from ..storage import restic
        repo = self.backup_repository()
        tags = (f"ve={validate.veid(veid)}",) if veid is not None else ()
        with host_errors(veid, "cannot list the backups"):
            if not _exists(repo):
                return []
            found = restic.snapshots(repo, tags)
        return [_record(item) for item in found]

    def restore_backup(self, veid, backup_id, on_status=None):
        """Put the VE's whole disk back as backup ``backup_id`` of it holds it (a running VE
        is stopped and started again); return {"id", "restarted", "seconds"}.
        ``on_status(fraction)`` follows the restore (about each second)."""
        veid = validate.veid(veid)
        began = time.monotonic()
        with self._lock(veid):
            cfg = self._imaged(veid)
            self._refuse_if_moving(veid)
            found = self._backup_of(backup_id)
            running = self._running_init(veid) is not None
            if running:
                self._stop(veid, STOP_TIMEOUT, fast=False)
            self._discard_checkpoint(veid)
            try:
                self._disk_unmount(cfg)  # left mounted by a VE that halted on its own
                self._disk_released(cfg)
                fresh = self.layout.image(veid).with_name(f"{veid}.img.restore")
                self._disk_from_backup(cfg, found, fresh, on_status)
                with host_errors(veid, "cannot put the restored disk in place"):
                    os.replace(f"{fresh}.usage", f"{self.layout.image(veid)}.usage")
                    os.replace(fresh, self.layout.image(veid))
            finally:
                if running:
                    self._start(cfg)
        return {"id": found["id"], "restarted": running,
                "seconds": round(time.monotonic() - began, 3)}

    def create_from_backup(self, cfg, backup_id, on_status=None):
        """Create VE ``cfg`` (a new VEID: another plan, node or VPS) with the disk of backup
        ``backup_id``, its files' owners moved to its uid range; it is left stopped.
        ``on_status(fraction)`` follows the restore (about each second)."""
        from ..config import write
        self.layout.ensure()
        cfg = self._resolve_layout(cfg)
        if cfg.layout == DIRECTORY:
            raise Unsupported("a VE is restored from a backup onto a disk image", cfg.veid)
        found = self._backup_of(backup_id)
        with self._lock(cfg.veid):
            if self._read_config(cfg.veid, missing_ok=True) is not None:
                raise AlreadyExists("a VE with this VEID already exists", cfg.veid)
            self._check_ips_free(cfg)
            self._remove_files(cfg.veid)  # leftovers of a create that crashed
            with Reverter() as undo:
                undo.add(self._remove_files, cfg.veid)
                self._disk_from_backup(cfg, found, self.layout.image(cfg.veid), on_status)
                with host_errors(cfg.veid, "cannot write the VE's files"):
                    self.layout.mountpoint(cfg.veid).mkdir(mode=0o700)
                    write(self.layout.conf(cfg.veid), cfg)
                undo.commit()
        return cfg

    def restore_files(self, veid, backup_id, path, into="/"):
        """Restore ``path`` (a file or directory of the backup) into the running VE:
        at its own place (``into`` "/"), or under directory ``into``. Return the number
        of entries restored."""
        from ..storage import restic
        veid = validate.veid(veid)
        path, into = _inside_path(path, veid), _inside_path(into, veid)
        found = self._backup_of(backup_id)
        staging = self._backup_dir("work") / f"{veid}-files-{os.getpid()}-{time.time_ns()}"
        staging.mkdir(mode=0o700)
        try:
            with host_errors(veid, "cannot restore from the backup"):
                restic.restore(self.backup_repository(), found["id"], str(staging),
                               include=path)
            top = staging / path.lstrip("/")
            if not os.path.lexists(top):
                raise NotFound(f"{path} is not in backup {found['id']}", veid)
            data, count = _tar_of(staging, path.lstrip("/"), found["base"])
            done = self.exec(veid, ["tar", "-x", "-f", "-", "-C", into], input=data)
            if done.returncode:
                raise ResourceError(f"unpacking in the VE failed: "
                                    f"{done.stderr.decode(errors='replace')[-200:]}", veid)
        finally:
            import shutil
            shutil.rmtree(staging, ignore_errors=True)
        return count

    def backup_listing(self, backup_id, path="/"):
        """The entries of directory ``path`` of backup ``backup_id``."""
        from ..storage import restic
        found = self._backup_of(backup_id)
        with host_errors(found["veid"], "cannot list the backup"):
            return restic.listing(self.backup_repository(), found["id"],
                                  _inside_path(path, found["veid"]))

    def backup_dump(self, backup_id, path, out):
        """Write file ``path`` of backup ``backup_id`` to binary file ``out``."""
        from ..storage import restic
        found = self._backup_of(backup_id)
        with host_errors(found["veid"], "cannot read the file from the backup"):
            restic.dump(self.backup_repository(), found["id"],
                        _inside_path(path, found["veid"]), out)

    def backup_forget(self, veid, keep_daily, keep_weekly):
        """Keep the VE's latest backup of each of ``keep_daily`` days and ``keep_weekly``
        weeks; the others and the data only they held go."""
        from ..storage import restic
        veid = validate.veid(veid)
        with host_errors(veid, "cannot forget old backups"):
            restic.forget(self.backup_repository(), (f"ve={veid}",), keep_daily, keep_weekly)

    def backup_stored_bytes(self, veid):
        """Bytes the repository holds for the VE's backups (compressed, each piece
        counted once however many of its backups share it; 0 if it has none)."""
        from ..storage import restic
        veid = validate.veid(veid)
        repo = self.backup_repository()
        with host_errors(veid, "cannot measure the backups"):
            if not _exists(repo) or not restic.snapshots(repo, (f"ve={veid}",)):
                return 0
            return int(restic.stats(repo, (f"ve={veid}",)).get("total_size", 0))

    def backup_delete(self, backup_ids):
        """Delete these backups and the data only they held."""
        from ..storage import restic
        ids = [self._backup_of(i)["id"] for i in backup_ids]
        with host_errors(None, "cannot delete the backups"):
            restic.forget_ids(self.backup_repository(), ids)

    def backup_check(self, read_data=False):
        """Verify the repository (``read_data``: every byte of it); ResourceError if it is
        damaged, saying how."""
        from ..storage import restic
        repo = self.backup_repository()
        try:
            restic.check(repo, read_data)
        except OSError as exc:
            raise ResourceError(f"the backup repository {repo.url} is damaged: {exc}") \
                from exc

    # -- steps --------------------------------------------------------------

    def _imaged(self, veid):
        cfg = self._read_config(veid)
        if cfg.layout == DIRECTORY:
            raise Unsupported("backups are taken from a snapshot: they need a VE on a disk "
                              "image (layout image); this one's disk is a directory", veid)
        return cfg

    @contextlib.contextmanager
    def _backup_view(self, cfg, copy, where):
        """The tree VE ``cfg`` sees, of its image's ``copy``, read-only at ``where``:
        the image's own tree, or for a shared template its files over the template's
        layer (a backup holds the whole tree, restorable on any node)."""
        from ..storage import snapshot
        if not cfg.shared_template:
            with snapshot.mounted_readonly(copy, cfg.layout, where):
                yield
            return
        from ..config import IDMAP_SIZE
        from ..storage import layers
        upper = self._backup_dir("mnt") / f"{cfg.veid}.image"
        upper.mkdir(mode=0o700, exist_ok=True)
        with snapshot.mounted_readonly(copy, cfg.layout, upper), \
                layers.readonly_view(self.layout, cfg.veid, upper, where, cfg.idmap_base,
                                     IDMAP_SIZE):
            yield

    def _backup_dir(self, name):
        path = self.layout.root / "backups" / name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _backup_of(self, backup_id):
        """The record of backup ``backup_id`` (an id or a unique prefix of 8+)."""
        text = str(backup_id)
        if not 8 <= len(text) <= 64 or not set(text) <= _HEX_DIGITS:
            raise InvalidConfig(f"bad backup id {backup_id!r}")
        matches = [b for b in self.backups() if b["full_id"].startswith(text)]
        if len(matches) != 1:
            raise NotFound(f"no backup {text}" if not matches else f"{text} is ambiguous")
        return matches[0]

    def _disk_from_backup(self, cfg, found, path, on_status=None):
        """Make image ``path`` (new) of the VE's size holding backup ``found``, owned by
        its uid range; left unmounted, its usage recorded."""
        from ..storage import image, restic
        mountpoint = self._image_at(cfg)
        _remove(path)
        try:
            for folder in {mountpoint, self.layout.private(cfg.veid)}:  # the root view's
                folder.mkdir(mode=0o700, exist_ok=True)
            image.create(path, cfg.layout, cfg.limits.diskspace, cfg.limits.diskinodes,
                         mountpoint, 0 if cfg.shared_template else cfg.idmap_base)
            try:
                tree, layer = self._restore_root(cfg, mountpoint)
                restic.restore(self.backup_repository(), found["id"], str(tree),
                               on_status=on_status)
                _shift_owners(tree, found["base"], cfg.idmap_base)
                if layer is not None:
                    from ..storage import layers
                    layers.hide_layer(tree, layer)
            finally:
                image.unmount(path, mountpoint)
        except OSError as exc:
            image.remove(path)
            raise ResourceError(f"cannot restore the disk from backup {found['id']}: {exc}",
                                cfg.veid) from exc


    def _restore_root(self, cfg, mountpoint):
        """(where a backup's tree goes on a new image mounted at ``mountpoint``, the
        layer it must hide or None): the image's root, or for a shared template a new
        generation over the template's layer, which then hides that layer (the VE
        sees exactly the backup's tree; its files are the VE's own copies until a
        reinstall)."""
        if not cfg.shared_template:
            return mountpoint, None
        from ..storage import layers, templates
        tarball = templates.cache_path(self.layout.cache_dir, cfg.template)
        layer_id = layers.layer_for(self.layout, cfg.template, tarball)
        layer = self.layout.layer(layer_id)
        generation = layers.start_generation(mountpoint, layer, layer_id, cfg.idmap_base)
        return mountpoint / generation / "root", layer


def _record(item):
    tags = dict(tag.split("=", 1) for tag in item.get("tags") or () if "=" in tag)
    return {"id": item["short_id"], "full_id": item["id"], "time": item["time"],
            "veid": int(tags["ve"]) if tags.get("ve", "").isdigit() else None,
            "base": int(tags.get("base", "0") or 0)}


def _exists(repo):
    """False only for a local repository not made yet (a URL is asked by restic)."""
    local = repo.url.startswith("/")
    return not local or os.path.exists(os.path.join(repo.url, "config"))


def _inside_path(path, veid):
    """``path`` normalised by validate.inside_path; InvalidConfig for VE ``veid`` if bad."""
    try:
        return validate.inside_path(path)
    except InvalidConfig as exc:
        raise InvalidConfig(f"bad path {path!r}: {exc.message}", veid) from None


def _shift_owners(root, old_base, new_base):
    """Move the owners of every file under ``root`` (itself included) from uid range
    ``old_base`` to ``new_base``; owners outside the range become nobody."""
    if old_base == new_base:
        return

    def move(name, dir_fd):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        os.chown(name, new_base + _unshifted(st.st_uid, old_base),
                 new_base + _unshifted(st.st_gid, old_base), dir_fd=dir_fd,
                 follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(name, st.st_mode & 0o7777, dir_fd=dir_fd)  # chown dropped set-id bits

    move(str(root), None)
    for _, dirs, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in dirs + files:
            move(name, dir_fd)


def _tar_of(staging, relative, base):
    """A tar (bytes) of ``staging/relative`` named ``relative``, owners as the VE sees
    them (its uid range ``base`` made 0-based), and the number of entries."""
    out, count = io.BytesIO(), 0
    import tarfile  # on use: every vectl call imports this module
    with tarfile.open(fileobj=out, mode="w") as tar:
        def inside(info):
            nonlocal count
            count += 1
            info.uid, info.gid = _unshifted(info.uid, base), _unshifted(info.gid, base)
            info.uname = info.gname = ""
            return info
        tar.add(staging / relative, arcname=relative, recursive=True, filter=inside)
    return out.getvalue(), count


def _unshifted(ident, base):
    """Host uid ``ident`` as a VE of uid range ``base`` sees it (nobody if outside)."""
    inner = ident - base
    return inner if 0 <= inner < IDMAP_SIZE else NOBODY


class _only_backup_of:
    """One backup of a VE at a time (StateError for the second), by a lock file."""

    def __init__(self, work, veid):
        self.path, self.veid = work / f"{veid}.lock", veid

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StateError("a backup of this VE is running", self.veid) from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

"""The disk half of the Engine's verbs: the private area as an image or a directory.

Image layouts (ext4, xfs): ``images/<VEID>.img`` is mounted at
``private/<VEID>`` while the VE runs or is being built, and unmounted
otherwise; see ``storage/image.py``. With a shared template the image is
mounted at ``upper/<VEID>`` and ``private/<VEID>`` is the VE's root view, the
template's layer under the image's files (``storage/layers.py``). Directory
layout: ``private/<VEID>`` is a plain directory; usage is counted by walking
it, not enforced.
"""

import errno

from ..config import DIRECTORY, IMAGE
from ..errors import InvalidConfig, NeedsStop, ResourceError, StateError, Unsupported
from ..log import get as get_logger

log = get_logger(__name__)


class DiskMixin:
    """Disk steps of the Engine (needs ``layout``, ``cgroups`` and ``_unpack``)."""

    def disk_usage(self, veid):
        """The VE's DiskUsage: bytes and inodes used, and its totals."""
        cfg = self._read_config(veid)
        from ..storage import image
        if cfg.layout == DIRECTORY:
            from ..storage.du import directory_usage
            used, inodes = directory_usage(self.layout.private(cfg.veid))
            return image.DiskUsage(used, cfg.limits.diskspace, inodes, cfg.limits.diskinodes)
        try:
            return image.usage(self.layout.image(cfg.veid), self._image_at(cfg))
        except OSError as exc:
            raise ResourceError(f"cannot read the VE's disk usage: {exc}", cfg.veid) from exc

    def _layer_of(self, cfg):
        """The id of the template layer under shared-template VE ``cfg`` (its image
        names it: a snapshot rolled back may name an older one)."""
        from ..storage import image, layers
        upper = self._image_at(cfg)
        if image.is_mounted(upper):
            return layers.current(upper)[1]
        upper.mkdir(mode=0o700, exist_ok=True)
        image.mount(self.layout.image(cfg.veid), cfg.layout, upper)
        try:
            return layers.current(upper)[1]
        finally:
            image.unmount(self.layout.image(cfg.veid), upper)

    def _image_at(self, cfg):
        """Where the VE's image is mounted (its own filesystem, to freeze or grow)."""
        return self.layout.upper(cfg.veid) if cfg.shared_template \
            else self.layout.private(cfg.veid)

    @staticmethod
    def _resolve_layout(cfg):
        """``cfg`` with an "image" layout made concrete (ext4 or xfs) for this host."""
        if cfg.layout != IMAGE:
            return cfg
        from ..storage import image
        return cfg.replace(layout=image.default_fs())

    def _disk_create(self, cfg, tarball):
        """Make the private area and unpack ``tarball`` into it (left unmounted)."""
        private = self.layout.private(cfg.veid)
        if cfg.layout == DIRECTORY:
            return self._unpack(tarball, cfg, private)
        from ..storage import image, layers
        layer_id = layers.layer_for(self.layout, cfg.template, tarball) \
            if cfg.shared_template else None
        mountpoint = self._image_at(cfg)
        try:
            private.mkdir(mode=0o700)
            if cfg.shared_template:
                mountpoint.mkdir(mode=0o700)
            image.create(self.layout.image(cfg.veid), cfg.layout, cfg.limits.diskspace,
                         cfg.limits.diskinodes, mountpoint,
                         0 if cfg.shared_template else cfg.idmap_base)
            if cfg.shared_template:
                layers.start_generation(mountpoint, self.layout.layer(layer_id), layer_id,
                                        cfg.idmap_base)
        except OSError as exc:
            raise ResourceError(f"cannot make the VE's disk image: {exc}", cfg.veid) from exc
        if not cfg.shared_template:
            self._unpack(tarball, cfg, private, into_empty=True)
        self._disk_unmount(cfg)

    def _disk_mount(self, cfg):
        if cfg.layout == DIRECTORY:
            return
        from ..storage import image
        try:
            if cfg.shared_template:  # a VE moved or restored here may lack its mount point
                self._image_at(cfg).mkdir(mode=0o700, exist_ok=True)
            image.mount(self.layout.image(cfg.veid), cfg.layout, self._image_at(cfg))
            if cfg.shared_template:
                from ..config import IDMAP_SIZE
                from ..storage import layers
                layers.mount_view(self.layout, cfg.veid, cfg.idmap_base, IDMAP_SIZE)
        except OSError as exc:
            raise ResourceError(f"cannot mount the VE's disk image: {exc}", cfg.veid) from exc

    def _disk_unmount(self, cfg):
        """Unmount the VE's image (safe to repeat; its loop device frees itself)."""
        if cfg is None or cfg.layout == DIRECTORY:
            return
        from ..storage import image
        try:
            if cfg.shared_template:
                image.unmount_at(self.layout.private(cfg.veid))  # the view, then the image
            image.unmount(self.layout.image(cfg.veid), self._image_at(cfg))
        except OSError as exc:
            raise ResourceError(f"cannot unmount the VE's disk image: {exc}", cfg.veid) from exc

    def _disk_released(self, cfg, timeout=10):
        """Wait until the stopped VE's image is no filesystem's any more (nothing of it
        still being written), or raise ResourceError."""
        if cfg.layout == DIRECTORY:
            return
        from ..storage import image
        try:
            image.wait_released(self.layout.image(cfg.veid), timeout)
        except OSError as exc:
            raise ResourceError(f"the VE's disk is not released: {exc}", cfg.veid) from exc

    def _disk_remove(self, veid):
        """Unmount and delete the image, whatever the config says (it may be gone)."""
        from ..storage import image
        path = self.layout.image(veid)
        image.unmount_at(self.layout.private(veid))  # a shared template's view, if one
        image.unmount(path, self.layout.upper(veid))
        image.unmount(path, self.layout.private(veid))
        image.remove(path)

    def _disk_change(self, old, new, running):
        """Apply a new diskspace/diskinodes: live while the VE runs (grow only).

        The image's real size, not the saved config, says whether there is
        anything to do. NeedsStop: it can change only while the VE is stopped.
        """
        if new.layout == DIRECTORY:
            return
        from ..storage import image
        path, private = self.layout.image(new.veid), self._image_at(new)
        size, inodes = new.limits.diskspace, new.limits.diskinodes
        try:
            if size == path.stat().st_size and inodes == old.limits.diskinodes:
                return
            if not running:
                self._disk_unmount(new)  # left by a VE that halted on its own
            used = image.usage(path, private, fs=None if running else new.layout)
        except OSError as exc:
            raise ResourceError(f"cannot read the VE's disk: {exc}", new.veid) from exc
        if size < used.space_used + image.MIN_FREE:
            raise InvalidConfig(f"the VE uses {_mib(used.space_used)}; its disk cannot shrink "
                                f"to {_mib(size)}", new.veid)
        if inodes < used.inodes_used:
            raise InvalidConfig(f"the VE has {used.inodes_used} inodes in use; more than "
                                f"{inodes}", new.veid)
        try:
            image.resize(path, new.layout, private, size, inodes, old.limits.diskinodes,
                         new.idmap_base)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise NeedsStop(f"{exc.strerror or exc}", new.veid) from exc
            raise ResourceError(f"cannot resize the VE's disk: {exc}", new.veid) from exc

    def _apply_io_limits(self, cfg, before=None):
        """Cap the running VE's I/O on its image's loop device.

        At start (``before`` None) only caps it has are written, and a weight
        this host cannot enforce is a warning: the VE may come from a node
        that could. On a change (``before``: the old limits) everything is
        written, lifted caps and weight included, and refusals are errors.
        """
        limits = cfg.limits
        wanted = any(io_values(limits))
        if not wanted and before is None:
            return
        if cfg.layout == DIRECTORY:
            raise Unsupported("I/O limits need an image layout (a device of the VE's own)",
                              cfg.veid)
        from ..kernel import loop
        from ..storage import image
        devices = image.attached(self.layout.image(cfg.veid))
        if not devices:
            raise StateError("the VE's disk image is not attached", cfg.veid)
        reset_weight = before is not None and bool(before.ioweight) and not limits.ioweight
        try:
            self.cgroups.apply_io(str(cfg.veid), limits, loop.device_number(devices[0]),
                                  reset_weight)
        except Unsupported:
            if before is not None:
                raise
            log.warning("VE %s: I/O weight %s not enforced on this host", cfg.veid,
                        limits.ioweight)
            if any(io_values(limits._replace(ioweight=0))):
                self.cgroups.apply_io(str(cfg.veid), limits._replace(ioweight=0),
                                      loop.device_number(devices[0]))
        except OSError as exc:
            raise ResourceError(f"could not apply I/O limits: {exc}", cfg.veid) from exc


def io_values(limits):
    """The I/O weight and caps of ``limits`` (any non-zero: the VE has I/O limits)."""
    return (limits.ioweight, limits.readbps, limits.writebps, limits.readiops, limits.writeiops)


def _mib(nbytes):
    return f"{nbytes >> 20} MiB"

"""reinstall: a fresh root from a template for a VE that keeps everything else."""

from .. import config as conf, fsutil, validate
from ..errors import ResourceError, VEError, host_errors
from ..storage import templates
from .timeouts import STOP_TIMEOUT


class ReinstallMixin:
    """The reinstall verb of the Engine (needs the lifecycle steps)."""

    def reinstall(self, veid, template=None, keep_old_as=None, timeout=STOP_TIMEOUT,
                  token=None):
        """Give the VE a fresh root from ``template`` (default: its own), keeping its
        VEID, addresses, limits and host name; return the new config.

        ``keep_old_as``: keep the old root as directory /<name> of the new one
        (VE root's, mode 0700; on a shared template, the files the VE had made or
        changed: the template's own are in the new root anyway). A running VE is
        stopped and started again. If the new tree cannot be made, the old one
        stays as it was. ``token``
        makes a retry safe: a reinstall whose token already completed is not
        done again (the dashboard passes its operation id).
        """
        veid = validate.veid(veid)
        from ..storage import reinstall as swap
        keep = None if keep_old_as is None else swap.check_keep_name(keep_old_as)
        with self._lock(veid):
            cfg = self._read_config(veid)
            new = cfg.replace(template=template or cfg.template)
            tarball = templates.cache_path(self.layout.cache_dir, new.template)
            if token is not None and self._reinstalled_token(veid) == str(token):
                return cfg  # this very reinstall is done already
            was_running = self._running_init(veid) is not None
            self._stop(veid, timeout, fast=False)
            try:
                if cfg.shared_template:
                    self._new_generation(new, tarball, keep)
                else:
                    self._disk_mount(cfg)
                    try:
                        swap.reinstall(self.layout.private(veid), tarball, cfg.idmap_base,
                                       self._journal(veid), keep)
                    finally:
                        self._disk_unmount(cfg)
            except (OSError, VEError) as exc:
                if was_running:
                    self._start(cfg)  # as it was
                if isinstance(exc, VEError):
                    raise
                raise ResourceError(f"reinstall failed, the old root stays: {exc}", veid) from exc
            self._discard_checkpoint(veid)  # its processes' files are gone
            with host_errors(veid, "cannot save the VE's config"):
                conf.write(self.layout.conf(veid), new)
                if token is not None:
                    fsutil.atomic_write(self._journal(veid, done=True), f"{token}\n")
            if was_running:
                self._start(new)
            return new

    def _new_generation(self, cfg, tarball, keep_as=None):
        """A shared-template VE's fresh root: an empty generation over the template's
        layer, switched to in one rename (storage/layers.py). The old one is dropped,
        or its files (all the VE had made or changed) kept as /<keep_as>."""
        from ..storage import image, layers
        layer_id = layers.layer_for(self.layout, cfg.template, tarball)
        upper = self.layout.upper(cfg.veid)
        self._disk_unmount(cfg)  # left by a VE that halted on its own
        image.mount(self.layout.image(cfg.veid), cfg.layout, upper)
        try:
            layers.start_generation(upper, self.layout.layer(layer_id), layer_id,
                                    cfg.idmap_base, keep_as)
        finally:
            image.unmount(self.layout.image(cfg.veid), upper)

    def _journal(self, veid, done=False):
        """Host-side record of a reinstall in progress (or the token of the last done)."""
        return self.layout.run_dir / f"{veid}.{'reinstalled' if done else 'reinstall'}"

    def _reinstalled_token(self, veid):
        try:
            return self._journal(veid, done=True).read_text().strip()
        except OSError:
            return None

"""Starting the VEs marked onboot when the node boots."""

from concurrent.futures import ThreadPoolExecutor

from .. import fsutil
from ..errors import VEError
from ..kernel import proc
from ..log import get as get_logger

log = get_logger(__name__)

BOOT_PARALLEL = 4  # VEs started at once when the node boots


class BootMixin:
    """``boot`` of the Engine (needs ``start`` and the query helpers)."""

    def boot(self, parallel=BOOT_PARALLEL):
        """Start the VEs marked onboot, once per boot of the node; return their VEIDs.

        Higher ``bootorder`` first, then by VEID, ``parallel`` at a time. A
        VE that fails to start is logged and left; calling this again in the
        same boot does nothing (the node watcher calls it when it starts with
        ``--onboot``; a crashed watcher's successor must not start VEs that
        were stopped since).
        """
        self.layout.ensure()
        marker, boot_id = self.layout.run_dir / "booted", proc.boot_id()
        try:
            if marker.read_text().strip() == boot_id:
                return []
        except OSError:
            pass
        wanted = [c for c in map(lambda v: self._read_config(v, missing_ok=True),
                                 self.layout.veids())
                  if c is not None and c.onboot and self._running_init(c.veid) is None]
        wanted.sort(key=lambda c: (-c.bootorder, c.veid))
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            outcomes = list(pool.map(self._boot_one, wanted))
        fsutil.atomic_write(marker, boot_id + "\n", durable=False)
        return [cfg.veid for cfg, ok in zip(wanted, outcomes) if ok]

    def _boot_one(self, cfg):
        try:
            self.start(cfg.veid)
            return True
        except VEError as exc:
            log.error("VE %s did not start at boot: %s", cfg.veid, exc)
            return False

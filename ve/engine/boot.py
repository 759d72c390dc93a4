"""Starting the VEs marked onboot when the node boots."""

import os
import sys
import time

from .. import fsutil
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
        started = self._start_in_children([cfg.veid for cfg in wanted], max(1, parallel))
        fsutil.atomic_write(marker, boot_id + "\n", durable=False)
        return [cfg.veid for cfg in wanted if cfg.veid in started]

    def _start_in_children(self, veids, parallel):
        """Start VEs in `vectl start` child processes, ``parallel`` at a time, in order;
        return the set of those that started.

        Processes, not threads: every start forks, and a fork made by one thread
        while others run Python can leave the child waiting forever for the GIL
        (CPython 3.11; it hung a boot in our tests). A child process forks alone.
        """
        import subprocess  # on use: every vectl call loads this module
        package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, VE_ROOT=str(self.layout.root),
                   VE_CGROUP_PARENT=self.cgroups.parent, PYTHONPATH=package)
        pending, running, started = list(veids), {}, set()
        while pending or running:
            while pending and len(running) < parallel:
                veid = pending.pop(0)
                running[veid] = subprocess.Popen(
                    [sys.executable, "-s", "-m", "ve.cli", "start", str(veid)], env=env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True)
            for veid, child in list(running.items()):
                if child.poll() is None:
                    continue
                error = child.stderr.read().strip()
                child.stderr.close()
                del running[veid]
                if child.returncode == 0:
                    started.add(veid)
                else:
                    log.error("VE %s did not start at boot: %s", veid,
                              error.splitlines()[-1] if error else child.returncode)
            time.sleep(0.02)
        return started

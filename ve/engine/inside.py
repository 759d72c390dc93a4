"""Changes the engine makes to a running VE's files, by its own code from inside.

``_inside`` runs one function of the engine in the VE's mount namespace as VE
root (``kernel.inside``) and turns what can go wrong into the engine's
errors. It never waits longer than INSIDE_TIMEOUT: the caller holds the VE's
lock, and a VE must not be able to keep it.
"""

import errno
import os

from ..errors import ResourceError, StateError
from ..kernel import proc

INSIDE_TIMEOUT = 10.0


class InsideMixin:
    """``_inside`` of the Engine (needs the query helpers)."""

    def _inside(self, veid, func, args, what):
        """Return ``func(*args)`` run inside running VE ``veid``; ``what`` prefixes errors."""
        # Imported here, by the caller, before its helper forks and enters the VE (where
        # nothing may be imported: the paths would be the VE's). Every vectl call loads
        # this module; few verbs change a VE's files.
        from ..kernel import inside
        cfg = self._read_config(veid)
        record = self._running_init(veid)
        pidfd = proc.pidfd_for(record.pid, record.start_time) if record else None
        if pidfd is None:
            raise StateError("the VE is not running", veid)
        try:
            return inside.call(pidfd, bool(cfg.idmap_base), func, args, timeout=INSIDE_TIMEOUT)
        except OSError as exc:
            detail = exc.strerror or str(exc)
            if exc.errno == errno.ETIMEDOUT:
                detail = f"no answer within {INSIDE_TIMEOUT:g} s (a stuck filesystem in the VE?)"
            raise ResourceError(f"{what}: {detail}", veid) from exc
        finally:
            os.close(pidfd)

"""What the host does around a VE's init as it comes up (started or restored)."""

from ..errors import ResourceError
from ..kernel import hostfiles
from ..log import get as get_logger

log = get_logger(__name__)

# The OOM killer's last choice in a VE: init's score is set from the host, which
# also makes it the floor (oom_score_adj_min) for everything init forks, so no
# process of the VE can go below it (that needs CAP_SYS_RESOURCE on the host).
# -1000 would make the VE unkillable as a whole (its children inherit it).
INIT_OOM_SCORE_ADJ = -999


def close_host_files():
    """Close to others the host files a VE would read behind an unmounted mask."""
    _changed, failures = hostfiles.close_world_readable()
    for name, exc in failures:
        log.warning("cannot close %s to others: %s", name, exc)


def protect_init(veid, pid):
    """Make init the OOM killer's last choice in its VE (see INIT_OOM_SCORE_ADJ).

    A host without CAP_SYS_RESOURCE (some sandboxes) cannot lower a score:
    init keeps 0, commands the host runs in the VE still go first (they raise
    their own), and an init the OOM killer takes is started again (``reap``).
    """
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(INIT_OOM_SCORE_ADJ))
    except PermissionError:
        log.debug("VE %s: no CAP_SYS_RESOURCE here; init keeps its OOM score", veid)
    except OSError as exc:
        raise ResourceError(f"cannot protect init from the OOM killer: {exc}", veid) from exc

"""The VPS page's Backups card: what the page shows of a VPS's backups and may do now."""

from hosting.operations.models import Operation

from . import backups
from .forms import RestoreBackupForm
from .refusals import refusal

Kind = Operation.Kind


def context(ve, current, viewer):
    """The card's context: where the plan sells backups, for staff, or while a terminated
    VPS's backups are kept; else nothing (no card)."""
    rows = list(ve.backups.all())
    destroyed = ve.actual_state == "destroyed"
    if not (viewer.is_staff or backups.included(ve) or rows):
        return {}
    failed = ve.operations.filter(kind=Kind.BACKUP).first()
    return {"backups": rows, "backup_card": True,
            "backup_failed": failed if failed and failed.state == "failed" else None,
            "backups_kept_until": backups.terminated_until(ve) if destroyed else None,
            "backup_refusal": refusal(ve, current, Kind.BACKUP) if not destroyed else "gone",
            "restore_refusal": refusal(ve, current, Kind.RESTORE) if not destroyed else "gone",
            "restore_form": RestoreBackupForm()}

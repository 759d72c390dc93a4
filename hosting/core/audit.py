"""Writing the audit log: one row per staff or customer action."""

from .models import AuditLog


def record(actor, action, obj=None, **detail):
    """Append an audit row for ``actor`` doing ``action`` on ``obj``."""
    actor = actor if getattr(actor, "is_authenticated", False) else None
    return AuditLog.objects.create(
        actor=actor, action=action,
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=str(getattr(obj, "veid", None) or getattr(obj, "pk", "")) if obj is not None else "",
        detail=detail)

"""Writing the audit log: one row per staff or customer action."""

from .models import AuditLog


def record(actor, action, obj=None, **detail):
    """Append an audit row for ``actor`` doing ``action`` on ``obj``."""
    actor = actor if getattr(actor, "is_authenticated", False) else None
    return AuditLog.objects.create(
        actor=actor, action=action,
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=(str(getattr(obj, "veid", None) or getattr(obj, "pk", ""))
                   if obj is not None else ""),
        detail=detail)


def on_login(sender, request, user, **kwargs):
    record(user, "auth.login", user, address=_client(request))


def on_login_failed(sender, credentials, request=None, **kwargs):
    # Only the user name is kept; the attempted password never is.
    locked = getattr(request, "login_locked_seconds", 0)
    record(None, "auth.login_failed", username=str(credentials.get("username", ""))[:150],
           address=_client(request), **({"locked_out": True} if locked else {}))


def _client(request):
    from .lockout import client_address
    return client_address(request)

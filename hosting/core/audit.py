"""Writing the audit log: one row per staff or customer action."""

import ipaddress

from django.conf import settings

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
    return client_address(request)


def client_address(request):
    """The client's IP address as this deployment can trust it ("" if unknown)."""
    if request is None:
        return ""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = int(getattr(settings, "TRUSTED_PROXIES", 0))
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
                if h.strip()]
        if len(hops) >= proxies:
            remote = hops[-proxies]  # appended by the nearest proxy: not the client's to forge
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return ""


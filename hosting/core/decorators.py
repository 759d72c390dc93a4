"""View guards: customers get 403 on staff pages, anonymous users the login page,
staff members 403 where their role (roles.py) lacks the page's capability."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from . import roles

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def staff_required(read, write=None):
    """Staff whose role has capability ``read`` (GET, HEAD) or ``write`` (anything else;
    default ``read``) may use the view; other signed-in users get 403."""
    roles.CAPABILITIES[read]  # a misspelt capability fails at import, not at request
    if write is not None:
        roles.CAPABILITIES[write]

    def decorate(view):
        @login_required
        @wraps(view)
        def guarded(request, *args, **kwargs):
            if not request.user.is_staff:
                raise PermissionDenied("staff only")
            needed = read if request.method in SAFE_METHODS else (write or read)
            if not roles.can(request.user, needed):
                raise PermissionDenied(roles.refusal(request.user))
            return view(request, *args, **kwargs)
        guarded.staff_capabilities = (read, write or read)
        return guarded
    return decorate

"""Template context shared by every page."""

from . import roles


def navigation(request):
    user = getattr(request, "user", None)
    return {"is_staff": bool(user and user.is_authenticated and user.is_staff),
            "staff_can": roles.capabilities(user)}

"""The one rule for what a user may see: staff everything, a customer their own."""

from . import roles


def for_user(queryset, user, owner_user_lookup):
    """Filter ``queryset`` to ``user``'s objects.

    ``owner_user_lookup`` leads to the owner's login."""
    if user.is_staff:  # every staff role sees every VPS; a staff login with no role, none
        return queryset if roles.can(user, "vps.view") else queryset.none()
    if not user.is_authenticated or not hasattr(user, "customer"):
        return queryset.none()
    return queryset.filter(**{owner_user_lookup: user})

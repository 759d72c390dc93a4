"""Staff logins for tests: a staff member always has a role (hosting/core/roles.py).

``make_staff(...)`` is the one way tests make staff, so what a real staff login
needs (its role, later its second factor) is given here and nowhere else.
"""


def make_staff(username, password=None, role="administrator", email=None, **extra):
    """A staff login ``username`` with ``role`` (default administrator)."""
    from django.contrib.auth.models import User

    from hosting.core import roles
    user = User.objects.create_user(username, email or f"{username}@example.com", password,
                                    is_staff=True, **extra)
    roles.set_role(user, role)
    return user

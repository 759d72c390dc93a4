"""Keeping the fuzz world usable: whatever a fuzzed request did, the fuzzers' own
logins and keys work afterwards, and no VPS stays busy for good.

Staff fuzzing may suspend the customer whose key the customer run uses, and a
fuzzed ``DELETE /api/v1/auth/token/`` revokes the very key it was sent with; with
no node, every operation would stay queued and its VPS refuse all else with 409.
``restore`` undoes these after each request (tests/fuzz/wsgi.py, tests/api/test_fuzz.py).
"""

from django.contrib.auth import get_user_model
from django.utils import timezone

from hosting.core import tokens
from hosting.core.models import ApiToken
from hosting.customers.models import Customer
from hosting.operations.models import Operation


def restore(seeded):
    """Put back the fuzzers' keys, logins and customer account; fail unfinished operations
    as a node that is gone would (``seeded``: what seed_fuzz returned)."""
    User = get_user_model()
    for role, key in seeded["keys"].items():
        user = User.objects.get(username=seeded["users"][role])
        staff = role == "staff"
        if not user.is_active or user.is_staff != staff:
            User.objects.filter(pk=user.pk).update(is_active=True, is_staff=staff)
        # get_or_create: the other server worker may be putting it back too.
        ApiToken.objects.get_or_create(digest=tokens.digest(key), defaults=dict(
            user=user, name="fuzz", prefix=key[:tokens.PREFIX_LENGTH]))
        if not staff:
            Customer.objects.filter(user=user).exclude(status=Customer.Status.ACTIVE) \
                .update(status=Customer.Status.ACTIVE)
    Operation.objects.filter(state__in=Operation.UNFINISHED).update(
        state=Operation.State.FAILED, error="no node in a fuzz run", error_code="interrupted",
        finished=timezone.now())

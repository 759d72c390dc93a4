"""Customer accounts: created by staff or a billing system, suspended and restored."""

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import transaction

from hosting.consoles import ending as consoles
from hosting.core import audit
from hosting.core.errors import Invalid

from .models import Customer


def create(username, email, password, actor, **profile):
    """Create a login and its customer account; Invalid on a taken name or weak password."""
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
        raise Invalid(f"user name {username} is taken", field="username")
    user = User(username=username, email=email)
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise Invalid(" ".join(exc.messages), field="password") from exc
    with transaction.atomic():
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save()
        customer = Customer.objects.create(user=user, **profile)
        audit.record(actor, "customer.create", customer, username=username)
    return customer


def set_status(customer, status, actor):
    """Suspend or restore an account; a suspended customer can sign in but not act."""
    customer.status = status
    customer.save(update_fields=["status"])
    audit.record(actor, f"customer.{status}", customer)
    if not customer.is_active:  # their open consoles close at once (staff's stay)
        consoles.after_commit(consoles.end_customer, customer.pk, "suspended",
                              "your account has been suspended")
    return customer

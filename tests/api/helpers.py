"""Constants and assertion helpers shared by the API and portal tests."""

from html import unescape

from hosting.core.models import AuditLog
from hosting.environments.models import VirtualEnvironment
from hosting.ipam.models import IPAddress
from hosting.operations.models import Operation

# Every login in these tests has this password (it passes Django's validators).
PASSWORD = "Blue-Harbour-7731"
ROOT_PASSWORD = "Root-Pass-Word-42"
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxLbZtq0o3Q8n0b7yJ5Y1YzQ9c8m1e0R1sT2u3v4w5x "
           "me@laptop")


def fill(path, world):
    """Put the ids of ``world`` into a URL template such as '/vps/{ve_b}/'."""
    return path.format(
        ve_a=world["ve_a"].veid, ve_b=world["ve_b"].veid, op_a=world["op_a"].pk,
        op_b=world["op_b"].pk, plan=world["plan"].pk, node=world["node"].pk,
        pool=world["pool4"].pk, cust_a=world["a"].pk, cust_b=world["b"].pk,
        template=world["template"].pk)


def counts():
    """How many rows the tables a request may write to hold.

    Sign-ins (``auth.*`` audit rows, written by the login signals, e.g. by a
    client's force_login or a failed re-authentication) are not counted: they
    record who tried, not a change.
    """
    return {"ves": VirtualEnvironment.objects.count(), "operations": Operation.objects.count(),
            "addresses": IPAddress.objects.count(),
            "audit": AuditLog.objects.exclude(action__startswith="auth.").count()}


def text(response):
    """A page's text with HTML entities decoded (so quotes in messages compare plainly)."""
    return unescape(response.content.decode())


def assert_login_redirect(response):
    assert response.status_code == 302, response.status_code
    assert response["Location"].startswith("/login/?next="), response["Location"]

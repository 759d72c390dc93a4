"""Issue 14: sign-in lockout with an escalating cool-off per account and per address.

The cool-off always ends (nobody can lock an account for good), a correct password
from a new address after it works, and each lockout is in the audit log."""

import time

import pytest
from django.test import Client
from rest_framework.test import APIClient

from hosting.core import lockout
from hosting.core.models import ApiToken, AuditLog, LoginThrottle

from .helpers import PASSWORD, text

pytestmark = pytest.mark.django_db

HOME, OFFICE, ELSEWHERE = "198.51.100.7", "203.0.113.9", "192.0.2.44"


@pytest.fixture(autouse=True)
def _short_cooloff(settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 6
    settings.LOGIN_COOLOFF = 1  # seconds: the tests wait it out for real
    settings.LOGIN_COOLOFF_MAX = 3
    settings.TRUSTED_PROXIES = 0


def _sign_in(username, password, address=HOME, **headers):
    return Client(REMOTE_ADDR=address, **headers).post(
        "/login/", {"username": username, "password": password})


def _signed_in(response):
    return response.status_code == 302 and response["Location"] == "/"


def _fail(username, times, address=HOME):
    for _ in range(times):
        assert _sign_in(username, "wrong-password-1", address).status_code == 200


def test_wrong_passwords_lock_the_account_even_for_the_right_one(world):
    _fail("alice", 3)
    response = _sign_in("alice", PASSWORD, OFFICE)  # another address: the account is locked
    assert response.status_code == 429
    assert int(response["Retry-After"]) == 1
    assert "Too many failed sign-ins: try again in 1 seconds." in text(response)
    row = AuditLog.objects.get(action="auth.locked_out")
    assert (row.detail["locked"], row.detail["account"], row.detail["lockouts"]) == \
        ("account", "alice", 1)
    assert row.detail["address"] == HOME
    assert AuditLog.objects.filter(action="auth.login_failed", detail__locked_out=True).count() \
        == 1
    assert not AuditLog.objects.filter(action="auth.login").exists()


def test_the_cool_off_ends_and_the_right_password_works_from_a_new_address(world):
    _fail("alice", 3)
    assert _sign_in("alice", PASSWORD).status_code == 429
    time.sleep(1.1)
    assert _signed_in(_sign_in("alice", PASSWORD, ELSEWHERE))
    assert not LoginThrottle.objects.filter(kind="account").exists()  # afresh


def test_each_lockout_in_a_row_doubles_the_cool_off_up_to_the_cap(world):
    waits = []
    for _ in range(3):
        _fail("alice", 3, address=f"192.0.2.{len(waits) + 1}")
        waits.append(int(_sign_in("alice", PASSWORD, OFFICE)["Retry-After"]))
        LoginThrottle.objects.filter(kind="account").update(locked_until=lockout.timezone.now())
    assert waits == [1, 2, 3]  # 1, 2, then 4 capped at 3
    assert [r.detail["lockouts"] for r in AuditLog.objects.filter(action="auth.locked_out")
            .order_by("id")] == [1, 2, 3]


def test_failures_while_locked_do_not_lengthen_the_cool_off(world):
    _fail("alice", 3)
    until = LoginThrottle.objects.get(kind="account").locked_until
    for _ in range(5):
        assert _sign_in("alice", "wrong-password-1").status_code == 429
    assert LoginThrottle.objects.get(kind="account").locked_until == until
    assert AuditLog.objects.filter(action="auth.locked_out").count() == 1


def test_a_correct_password_clears_the_accounts_failures(world):
    _fail("alice", 2)
    assert _signed_in(_sign_in("alice", PASSWORD))
    _fail("alice", 2)
    assert _signed_in(_sign_in("alice", PASSWORD))


def test_one_address_trying_many_accounts_is_locked_other_addresses_are_not(world):
    for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
        _sign_in(name, "wrong-password-1")
    response = _sign_in("bob", PASSWORD)  # bob's account is fine, the address is not
    assert response.status_code == 429
    assert AuditLog.objects.filter(action="auth.locked_out", detail__locked="address",
                                   detail__address=HOME).exists()
    assert _signed_in(_sign_in("bob", PASSWORD, OFFICE))


def test_a_forged_forwarded_for_header_changes_nothing_without_a_trusted_proxy(world):
    for i in range(6):
        _sign_in(f"user{i}", "wrong-password-1", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")
    assert _sign_in("bob", PASSWORD, HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 429


def test_behind_a_trusted_proxy_the_address_it_saw_counts(world, settings):
    settings.TRUSTED_PROXIES = 1
    proxy = "127.0.0.1"
    for name in ("alice", "carol", "dave", "erin", "frank", "gina"):
        # the client's own claim comes first; the proxy appends what it saw
        _sign_in(name, "wrong-password-1", proxy, HTTP_X_FORWARDED_FOR=f"10.1.1.1, {HOME}")
    locked = _sign_in("bob", PASSWORD, proxy, HTTP_X_FORWARDED_FOR=HOME)
    assert locked.status_code == 429
    assert _signed_in(_sign_in("bob", PASSWORD, proxy, HTTP_X_FORWARDED_FOR=OFFICE))


def test_the_token_endpoint_obeys_the_lockout(world):
    client = APIClient(REMOTE_ADDR=HOME)
    for _ in range(3):
        response = client.post("/api/v1/auth/token/", {"username": "alice",
                                                        "password": "wrong-password-1"})
        assert response.status_code == 400
    response = client.post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert ApiToken.objects.count() == 0
    time.sleep(1.1)
    response = client.post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200


def test_the_admin_sign_in_obeys_the_lockout(world):
    for _ in range(3):
        Client(REMOTE_ADDR=HOME).post("/admin/login/", {"username": "staffer",
                                                         "password": "wrong-password-1"})
    response = Client(REMOTE_ADDR=OFFICE).post(
        "/admin/login/?next=/admin/", {"username": "staffer", "password": PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in response.client.session


def test_reauthentication_is_not_a_way_around_the_lockout(world):
    """The portal's current-password check has its own limit (environments.services) and
    does not count towards the sign-in lockout: a stolen session cannot lock the owner out."""
    client = Client(REMOTE_ADDR=HOME)
    client.force_login(world["b"].user)
    for _ in range(4):
        client.post(f"/vps/{world['ve_b'].veid}/password/",
                    {"current_password": "wrong-password-1", "root_password": "Root-Pass-42-x"})
    assert not LoginThrottle.objects.exists()

"""Issue 14: two-factor sign-in (TOTP with recovery codes): required of staff, optional
for customers unless the provider requires it; it guards re-authentication and the
token endpoint too. Codes are computed here from the device's key (tests/staffing.totp)."""

import re
import time

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from hosting.core.models import ApiToken, AuditLog, RecoveryCode
from tests.staffing import enrol, totp

from .helpers import PASSWORD, ROOT_PASSWORD, counts, fill, text

pytestmark = pytest.mark.django_db


def _sign_in(username, password=PASSWORD):
    client = Client()
    response = client.post("/login/", {"username": username, "password": password})
    assert response.status_code == 302, text(response)
    return client


def _secret_of(page):
    return re.search(r'id="totp-secret">([A-Z2-7=]+)<', page).group(1)


def _hex(b32):
    import base64
    return base64.b32decode(b32).hex()


def _recovery_codes(page):
    return re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", page)


# -- staff must enrol before anything else -------------------------------------------------

def test_a_staff_member_without_a_device_is_sent_to_enrol_first(world):
    TOTPDevice.objects.filter(user=world["staff"]).delete()
    client = _sign_in("staffer")
    for path in ("/staff/nodes/", "/", "/account/api-keys/", "/vps/102/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/account/two-factor/?next=")
    api = client.get("/api/v1/nodes/")
    assert api.status_code == 403 and api.json()["code"] == "two_factor_needed"
    page = client.get("/account/two-factor/?next=/staff/nodes/")
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    secret = _secret_of(text(page))
    assert "<svg" in text(page)  # the QR code, drawn inline
    done = client.post("/account/two-factor/", {"code": totp(_hex(secret)),
                                                "next": "/staff/nodes/"})
    assert done.status_code == 201
    codes = _recovery_codes(text(done))
    assert len(codes) == 10 and 'href="/staff/nodes/"' in text(done)
    assert client.get("/staff/nodes/").status_code == 200  # this session gave its code
    assert AuditLog.objects.filter(action="auth.2fa_enrolled", actor=world["staff"]).exists()
    # only digests of the recovery codes are kept
    digests = set(RecoveryCode.objects.values_list("digest", flat=True))
    assert len(digests) == 10 and not any(code in digests for code in codes)


def test_a_wrong_code_does_not_enrol(world):
    TOTPDevice.objects.filter(user=world["staff"]).delete()
    client = _sign_in("staffer")
    _secret_of(text(client.get("/account/two-factor/")))
    response = client.post("/account/two-factor/", {"code": "000000"})
    assert response.status_code == 400 and "did not match" in text(response)
    assert not TOTPDevice.objects.filter(user=world["staff"], confirmed=True).exists()
    assert client.get("/staff/nodes/").status_code == 302


def test_an_enrolled_staff_member_gives_a_code_after_the_password(world):
    client = _sign_in("staffer")
    first = client.get("/staff/nodes/")
    assert first["Location"] == "/account/two-factor/verify/?next=%2Fstaff%2Fnodes%2F"
    assert client.get("/api/v1/nodes/").status_code == 403
    response = client.post("/account/two-factor/verify/",
                           {"code": totp(world["staff"].totp_device.key),
                            "next": "/staff/nodes/"})
    assert (response.status_code, response["Location"]) == (302, "/staff/nodes/")
    assert client.get("/staff/nodes/").status_code == 200
    assert client.get("/api/v1/nodes/").status_code == 200


def test_a_code_works_once(world):
    code = totp(world["staff"].totp_device.key)
    first, second = _sign_in("staffer"), _sign_in("staffer")
    assert first.post("/account/two-factor/verify/", {"code": code}).status_code == 302
    refused = second.post("/account/two-factor/verify/", {"code": code})
    assert refused.status_code == 400
    assert AuditLog.objects.filter(action="auth.2fa_failed").count() == 1


def test_staff_cannot_turn_two_factor_off(world):
    client = _sign_in("staffer")
    client.post("/account/two-factor/verify/", {"code": totp(world["staff"].totp_device.key)})
    page = text(client.get("/account/two-factor/"))
    assert "turn-off-form" not in page
    time.sleep(1)
    client.post("/account/two-factor/", {"action": "turn-off", "password": PASSWORD,
                                         "code": totp(world["staff"].totp_device.key,
                                                      at=time.time() + 30)})
    assert TOTPDevice.objects.filter(user=world["staff"], confirmed=True).exists()


# -- customers: optional, unless the provider requires it ----------------------------------

def test_a_customer_without_two_factor_signs_in_with_the_password(world):
    assert _sign_in("bob").get("/").status_code == 200


def test_the_provider_can_require_it_of_customers(world, settings):
    settings.TWO_FACTOR_CUSTOMERS = "required"
    response = _sign_in("bob").get("/")
    assert response["Location"].startswith("/account/two-factor/?next=")


def _enrol_via_portal(client):
    secret = _hex(_secret_of(text(client.get("/account/two-factor/"))))
    done = client.post("/account/two-factor/", {"code": totp(secret)})
    assert done.status_code == 201
    return secret, _recovery_codes(text(done))


def test_a_customer_enrols_and_then_signs_in_with_a_code_or_a_recovery_code(world):
    secret, codes = _enrol_via_portal(_sign_in("bob"))
    client = _sign_in("bob")
    assert client.get("/").status_code == 302
    wrong = client.post("/account/two-factor/verify/", {"code": "123456"})
    assert wrong.status_code == 400
    time.sleep(1.1)  # the device backs off after a wrong code
    assert client.post("/account/two-factor/verify/", {"code": codes[0]}).status_code == 302
    assert client.get("/").status_code == 200
    assert AuditLog.objects.filter(action="auth.2fa_verified",
                                   detail__recovery_code=True).count() == 1
    again = _sign_in("bob")
    assert again.post("/account/two-factor/verify/", {"code": codes[0]}).status_code == 400
    assert RecoveryCode.objects.filter(device__user=world["b"].user).count() == 9


def test_a_customer_turns_it_off_with_password_and_code(world):
    client = _sign_in("bob")
    secret, _ = _enrol_via_portal(client)
    assert "turn-off-form" in text(client.get("/account/two-factor/"))
    response = client.post("/account/two-factor/", {
        "action": "turn-off", "password": PASSWORD, "code": totp(secret, at=time.time() + 30)})
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=world["b"].user).exists()
    assert not RecoveryCode.objects.filter(device__user=world["b"].user).exists()


# -- the token endpoint is no way around it ------------------------------------------------

def test_the_token_endpoint_wants_a_code_from_a_login_with_two_factor(world):
    device = enrol(world["b"].user)
    api = APIClient()
    url = "/api/v1/auth/token/"
    without = api.post(url, {"username": "bob", "password": PASSWORD})
    assert without.status_code == 400 and "otp_code" in without.json()
    time.sleep(1.1)
    wrong = api.post(url, {"username": "bob", "password": PASSWORD, "otp_code": "000000"})
    assert wrong.status_code == 400
    assert ApiToken.objects.count() == 0
    time.sleep(2.1)
    right = api.post(url, {"username": "bob", "password": PASSWORD,
                           "otp_code": totp(device.key)})
    assert right.status_code == 200 and ApiToken.objects.count() == 1


def test_staff_without_a_device_get_no_key(world):
    TOTPDevice.objects.filter(user=world["staff"]).delete()
    response = APIClient().post("/api/v1/auth/token/", {"username": "staffer",
                                                        "password": PASSWORD})
    assert response.status_code == 403 and "two-factor" in response.json()["detail"]
    assert ApiToken.objects.count() == 0


# -- re-authentication wants the code too --------------------------------------------------

def test_reinstall_and_root_password_want_a_code_from_a_customer_with_two_factor(
        world, api_as):
    device = enrol(world["b"].user)
    client = api_as("b")  # a session that gave its code when signing in
    path = fill("/api/v1/environments/{ve_b}/password/", world)
    before = counts()
    refused = client.post(path, {"root_password": ROOT_PASSWORD,
                                 "current_password": PASSWORD}, format="json")
    assert refused.status_code == 403
    assert "two-factor code" in refused.json()["detail"]
    assert counts() == before
    accepted = client.post(path, {"root_password": ROOT_PASSWORD, "current_password": PASSWORD,
                                  "otp_code": totp(device.key)}, format="json")
    assert accepted.status_code == 202


def test_the_portal_reinstall_wants_the_code_too(world, page_as):
    device = enrol(world["b"].user)
    client = page_as("b")
    path = fill("/vps/{ve_b}/reinstall/", world)
    data = {"current_password": PASSWORD, "template": world["template"].pk}
    refused = client.post(path, data)
    assert refused.status_code == 403 and "two-factor code" in text(refused)
    ok = client.post(path, dict(data, otp_code=totp(device.key)))
    assert ok.status_code == 302


def test_manage_py_two_factor_resets_a_lost_phone_and_enrols(world, tmp_path, capsys):
    from django.core.management import call_command
    call_command("two_factor", "staffer", "--reset")
    assert not TOTPDevice.objects.filter(user=world["staff"]).exists()
    assert AuditLog.objects.filter(action="auth.2fa_removed").count() == 1
    key_file = tmp_path / "key"
    call_command("two_factor", "staffer", "--enrol", "--key-file", str(key_file))
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    client = _sign_in("staffer")
    response = client.post("/account/two-factor/verify/",
                           {"code": totp(key_file.read_text().strip())})
    assert response.status_code == 302
    assert client.get("/staff/nodes/").status_code == 200

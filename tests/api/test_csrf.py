"""CSRF: a signed-in browser session cannot be ridden by another site's form or script.

Session-authenticated API calls and portal forms need the CSRF token; API
calls authenticated by ``Authorization: Token`` do not (no cookie is involved).
"""

import pytest
from django.test import Client

from hosting.operations.models import Operation

from .helpers import PASSWORD, ROOT_PASSWORD, counts

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(world):
    """Customer A's browser: session cookie, CSRF checks on, as in production."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["a"].user)
    return client


def _csrf_token(client, world):
    """Open A's VPS page (it has forms) and read the CSRF cookie it sets."""
    assert client.get(f"/vps/{world['ve_a'].veid}/").status_code == 200
    return client.cookies["csrftoken"].value


def test_api_action_without_csrf_token_is_refused_and_writes_nothing(browser, world):
    before = counts()
    response = browser.post(f"/api/v1/environments/{world['ve_a'].veid}/reboot/")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("CSRF Failed")
    assert counts() == before


def test_api_action_with_a_wrong_csrf_token_is_refused(browser, world):
    _csrf_token(browser, world)
    before = counts()
    response = browser.post(f"/api/v1/environments/{world['ve_a'].veid}/reboot/",
                            HTTP_X_CSRFTOKEN="x" * 32)
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert counts() == before


def test_api_action_with_csrf_token_is_accepted(browser, world):
    token = _csrf_token(browser, world)
    response = browser.post(f"/api/v1/environments/{world['ve_a'].veid}/reboot/",
                            HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 202
    assert Operation.objects.get(pk=response.json()["id"]).kind == Operation.Kind.RESTART


def test_api_order_without_csrf_token_is_refused(browser, world):
    before = counts()
    response = browser.post("/api/v1/environments/", {
        "plan": "small", "template": "busybox", "hostname": "csrf.example.com",
        "root_password": ROOT_PASSWORD}, content_type="application/json")
    assert response.status_code == 403
    assert counts() == before


def test_portal_action_without_csrf_token_is_refused_and_writes_nothing(browser, world):
    before = counts()
    response = browser.post(f"/vps/{world['ve_a'].veid}/reboot/")
    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert counts() == before


def test_portal_action_with_csrf_token_is_accepted(browser, world):
    token = _csrf_token(browser, world)
    response = browser.post(f"/vps/{world['ve_a'].veid}/reboot/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"] == f"/vps/{world['ve_a'].veid}/"
    assert Operation.objects.filter(environment=world["ve_a"], kind="restart").count() == 1


def test_portal_order_without_csrf_token_is_refused(browser, world):
    before = counts()
    response = browser.post("/order/", {"plan": world["plan"].pk,
                                        "template": world["template"].pk,
                                        "hostname": "csrf.example.com",
                                        "root_password": ROOT_PASSWORD})
    assert response.status_code == 403
    assert counts() == before


def test_token_authentication_needs_no_csrf_token(token_client, world):
    client = token_client(world["a"].user)  # CSRF checks enforced, no cookie, no token
    response = client.post(f"/api/v1/environments/{world['ve_a'].veid}/reboot/")
    assert response.status_code == 202
    assert response.json()["requested_by"] == "alice"


def test_a_bad_token_is_refused_with_401(world):
    client = Client()
    response = client.get("/api/v1/environments/", HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert response.json()["detail"] == "Invalid token."


def test_token_endpoint_trades_a_password_for_a_token(world):
    client = Client(enforce_csrf_checks=True)
    good = client.post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD})
    bad = client.post("/api/v1/auth/token/", {"username": "alice", "password": "wrong-one-1"})
    assert good.status_code == 200 and len(good.json()["token"]) == 40
    assert bad.status_code == 400
    assert "Unable to log in" in bad.json()["non_field_errors"][0]

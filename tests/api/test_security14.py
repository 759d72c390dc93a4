"""Issue 14: security headers (a Content-Security-Policy without inline script, frames
denied, a referrer policy), sessions that end, and a production profile that
`manage.py check --deploy` finds clean."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hosting.core import security

from .helpers import fill

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


# -- headers -------------------------------------------------------------------------------

@pytest.mark.parametrize("role, path", [
    ("anon", "/login/"), ("b", "/"), ("b", "/order/"), ("b", "/vps/{ve_b}/"),
    ("b", "/account/api-keys/"), ("b", "/account/two-factor/"), ("staff", "/staff/nodes/"),
    ("staff", "/staff/reports/overcommit/"), ("b", "/api/v1/environments/"),
    ("anon", "/api/v1/schema/"),
])
def test_every_answer_carries_the_policy_and_the_headers(page_as, world, role, path):
    response = page_as(role).get(fill(path, world))
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/admin/", "/api/v1/docs/", "/api/v1/redoc/"])
def test_third_party_pages_may_inline_styles_but_never_scripts(page_as, world, path):
    response = page_as("staff").get(path)
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "style-src 'self' 'unsafe-inline'" in policy and "script-src 'self';" in policy
    body = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body), "an inline script"
    assert "fonts.googleapis.com" not in body


def test_no_template_has_an_inline_script_or_event_handler():
    offenders = []
    for template in (ROOT / "templates").rglob("*.html"):
        source = template.read_text()
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>", source) \
                or re.search(r"\son[a-z]+\s*=", source) or "javascript:" in source \
                or re.search(r"\sstyle\s*=", source):
            offenders.append(str(template.relative_to(ROOT)))
    assert offenders == []


# -- sessions ------------------------------------------------------------------------------

def _age(client, key, seconds):
    session = client.session
    session[key] = session.get(key, time.time()) - seconds
    session.save()


@pytest.mark.parametrize("key, seconds", [(security.SEEN, 31 * 60),
                                          (security.STARTED, 12 * 3600 + 1)])
def test_an_idle_or_old_session_is_signed_out(page_as, api_as, world, key, seconds):
    client = page_as("b")
    assert client.get("/").status_code == 200
    _age(client, key, seconds)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert "_auth_user_id" not in client.session
    api = api_as("b")
    assert api.get("/api/v1/environments/").status_code == 200
    _age(api, key, seconds)
    response = api.get("/api/v1/environments/")
    assert response.status_code == 401 and response.json()["code"] == "session_expired"


def test_a_session_in_use_stays(page_as, world):
    client = page_as("b")
    client.get("/")
    _age(client, security.SEEN, 25 * 60)  # idle 25 minutes: still inside the limit
    assert client.get("/").status_code == 200
    assert time.time() - client.session[security.SEEN] < 5  # and the clock restarted


# -- production ----------------------------------------------------------------------------

def _production_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTING_")}
    env.update(HOSTING_PRODUCTION="1",
               HOSTING_SECRET_KEY="k" * 20 + "-production-secret-" + "x" * 20,
               HOSTING_ALLOWED_HOSTS="panel.example.com", HOSTING_DATA_DIR=str(tmp_path),
               DJANGO_SETTINGS_MODULE="hosting.settings", **extra)
    return env


def test_manage_py_check_deploy_is_clean_in_production(tmp_path):
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level",
                           "WARNING"], cwd=ROOT, env=_production_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = _production_env(tmp_path)
    del env["HOSTING_SECRET_KEY"]
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "HOSTING_SECRET_KEY" in done.stderr


HSTS_PROBE = """
import django
django.setup()
from django.test import Client
tls = Client(HTTP_HOST="panel.example.com").get("/login/", secure=True)
plain = Client(HTTP_HOST="panel.example.com").get("/login/")
print(tls.status_code, tls.get("Strict-Transport-Security"))
print(plain.status_code, plain.get("Location"))
print(tls.cookies.get("csrftoken") and tls.cookies["csrftoken"]["secure"])
"""


def test_production_sends_hsts_over_tls_and_sends_plain_http_there(tmp_path):
    done = subprocess.run([sys.executable, "-c", HSTS_PROBE], cwd=ROOT,
                          env=_production_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    tls, plain, secure_cookie = done.stdout.splitlines()
    assert tls == "200 max-age=31536000; includeSubDomains; preload"
    assert plain == "301 https://panel.example.com/login/"
    assert secure_cookie == "True"


# -- terminate asks for the password (and the code) like reinstall -------------------------

@pytest.mark.parametrize("method, path", [("post", "/api/v1/environments/{ve_b}/terminate/"),
                                          ("delete", "/api/v1/environments/{ve_b}/")])
def test_terminating_through_the_api_wants_the_password(api_as, world, method, path):
    from tests.staffing import enrol, totp, verified_login

    from .helpers import PASSWORD, counts
    client, url = api_as("b"), fill(path, world)
    before = counts()
    for body in (None, {"current_password": "wrong-password-1"}):
        response = getattr(client, method)(url, body, format="json")
        assert response.status_code == 403
        assert "current password" in response.json()["detail"]
    device = enrol(world["b"].user)
    verified_login(client, world["b"].user)  # a session that gave its code
    response = getattr(client, method)(url, {"current_password": PASSWORD}, format="json")
    assert response.status_code == 403 and "two-factor code" in response.json()["detail"]
    assert counts() == before
    response = getattr(client, method)(url, {"current_password": PASSWORD,
                                             "otp_code": totp(device.key)}, format="json")
    assert response.status_code == 202 and response.json()["kind"] == "destroy"


def test_terminating_on_the_portal_wants_the_password(page_as, world):
    from .helpers import PASSWORD, counts, text
    client, url = page_as("b"), fill("/vps/{ve_b}/terminate/", world)
    page = text(client.get(fill("/vps/{ve_b}/", world)))
    assert 'id="terminate-form"' in page and 'data-reveal="terminate-form"' in page
    before = counts()
    refused = client.post(url, {})
    assert refused.status_code == 403 and "password" in text(refused)
    assert client.post(url, {"current_password": "wrong-password-1"}).status_code == 403
    assert counts() == before
    assert client.post(url, {"current_password": PASSWORD}).status_code == 302

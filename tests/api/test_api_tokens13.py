"""Issue 13: API keys are stored hashed; the token endpoint and old keys keep working."""

import importlib
import io
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from hosting.core import tokens
from hosting.core.models import ApiToken, AuditLog

from tests.staffing import enrol, verified_login

from .helpers import PASSWORD

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token/"


def _client(key):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _obtain(username, password=PASSWORD):
    return APIClient().post(TOKEN_URL, {"username": username, "password": password},
                            format="json")


def test_the_token_endpoint_returns_a_key_that_is_stored_only_hashed(world):
    response = _obtain("alice")
    assert response.status_code == 200, response.content
    key = response.json()["token"]
    assert len(key) == 40
    assert _client(key).get("/api/v1/environments/").status_code == 200
    stored = ApiToken.objects.get(user=world["a"].user)
    assert key not in {stored.digest, stored.prefix, stored.name}
    assert stored.digest == tokens.digest(key) and stored.prefix == key[:8]
    with connection.cursor() as cursor:  # no table holds the key in clear
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
    assert AuditLog.objects.filter(action="auth.token_issued").count() == 1


def test_each_sign_in_gets_its_own_key_and_both_keep_working(world):
    first, second = _obtain("alice").json()["token"], _obtain("alice").json()["token"]
    assert first != second
    for key in (first, second):
        assert _client(key).get("/api/v1/environments/").status_code == 200


def test_a_wrong_password_gets_400_and_no_key(world):
    response = _obtain("alice", "wrong-password-1")
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
    assert ApiToken.objects.count() == 0


@pytest.mark.parametrize("key", ["0" * 40, "", "x", "a" * 500])
def test_unknown_keys_get_401(world, key):
    response = _client(key).get("/api/v1/environments/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_key_differing_only_after_its_prefix_is_refused(world):
    _, key = tokens.issue(world["a"].user)
    forged = key[:8] + ("0" if key[8] != "0" else "1") + key[9:]
    assert _client(forged).get("/api/v1/environments/").status_code == 401


def test_an_inactive_logins_key_is_refused(world):
    _, key = tokens.issue(world["a"].user)
    world["a"].user.is_active = False
    world["a"].user.save()
    assert _client(key).get("/api/v1/environments/").status_code == 401


def test_delete_revokes_the_key_the_request_carries(world):
    _, kept = tokens.issue(world["a"].user)
    _, key = tokens.issue(world["a"].user)
    assert _client(key).delete(TOKEN_URL).status_code == 204
    assert _client(key).get("/api/v1/environments/").status_code == 401
    assert _client(kept).get("/api/v1/environments/").status_code == 200


def test_last_used_is_recorded(world):
    token, key = tokens.issue(world["a"].user)
    assert token.last_used is None
    _client(key).get("/api/v1/environments/")
    token.refresh_from_db()
    assert token.last_used is not None


def test_old_tokens_are_bounded_per_login(world, monkeypatch):
    monkeypatch.setattr(tokens, "MAX_TOKENS_PER_USER", 3)
    keys = [tokens.issue(world["a"].user)[1] for _ in range(5)]
    assert ApiToken.objects.filter(user=world["a"].user).count() == 3
    assert _client(keys[-1]).get("/api/v1/environments/").status_code == 200
    assert _client(keys[0]).get("/api/v1/environments/").status_code == 401


def test_the_migration_hashes_existing_clear_keys_and_empties_their_table(world):
    from rest_framework.authtoken.models import Token
    old = Token.objects.create(user=world["staff"])
    migration = importlib.import_module("hosting.core.migrations.0002_api_tokens_and_idempotency")
    # The function needs only the editor's connection (a real editor cannot open
    # inside the test's transaction on SQLite).
    migration.hash_old_tokens(django_apps, SimpleNamespace(connection=connection))
    assert not Token.objects.exists()
    migrated = ApiToken.objects.get(user=world["staff"])
    assert old.key not in (migrated.digest, migrated.prefix)
    assert _client(old.key).get("/api/v1/customers/").status_code == 200


def test_manage_py_api_token_prints_a_working_key(world):
    out = io.StringIO()
    call_command("api_token", "staffer", "--name", "billing", stdout=out)
    key = out.getvalue().strip()
    assert _client(key).get("/api/v1/customers/").status_code == 200
    assert ApiToken.objects.get(user=world["staff"]).name == "billing"


def test_the_admin_lists_keys_by_prefix_only(world, client):
    from django.contrib.auth.models import User
    boss = User.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    _, key = tokens.issue(world["a"].user, "billing")
    enrol(boss)
    verified_login(client, boss)
    page = client.get("/admin/core/apitoken/")
    assert page.status_code == 200
    assert key[:8].encode() in page.content and key.encode() not in page.content
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 404

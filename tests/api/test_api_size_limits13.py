"""Issue 13: oversized bodies get a fast 413 before anything parses them."""

import io
import time

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from .helpers import counts

pytestmark = pytest.mark.django_db

HUGE = 50 << 20


def _huge_json():
    return b'{"username": "' + b"a" * (HUGE - 20) + b'"}'


@pytest.mark.parametrize("path", ["/api/v1/auth/token/", "/api/v1/environments/",
                                  "/api/v1/customers/"])
def test_a_50_mb_body_gets_413_fast(api_as, world, path):
    before = counts()
    body = _huge_json()
    started = time.monotonic()
    response = APIClient().post(path, body, content_type="application/json")
    assert time.monotonic() - started < 1.0
    assert response.status_code == 413, response.status_code
    assert "too large" in response.json()["detail"]
    assert counts() == before


def test_a_signed_in_caller_gets_413_too(api_as, world):
    response = api_as("staff").post("/api/v1/customers/", _huge_json(),
                                    content_type="application/json")
    assert response.status_code == 413


def _chunked(body):
    """What a WSGI server passes for a chunked request: no length, a de-chunked stream."""
    return {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked",
            "wsgi.input": io.BytesIO(body)}


def test_a_chunked_body_over_the_limit_gets_413(world):
    body = b"[" + b"1," * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b"1]"
    response = APIClient().generic("POST", "/api/v1/auth/token/", body,
                                   content_type="application/json", **_chunked(body))
    assert response.status_code == 413


def test_a_small_chunked_body_is_read_normally(world):
    body = b'{"username": "alice", "password": "Blue-Harbour-7731"}'
    response = APIClient().generic("POST", "/api/v1/auth/token/", body,
                                   content_type="application/json", **_chunked(body))
    assert response.status_code == 200 and response.json()["token"]


def test_a_body_at_the_limit_is_parsed(api_as, world):
    padding = settings.DATA_UPLOAD_MAX_MEMORY_SIZE - 100
    body = b'{"company": "' + b"x" * padding + b'"}'
    response = api_as("staff").patch(f"/api/v1/customers/{world['a'].pk}/", body,
                                      content_type="application/json")
    assert response.status_code == 400  # too long for the field: parsed, then refused


def test_portal_forms_get_413_as_text(page_as, world):
    response = page_as("a").generic("POST", "/", b"x" * (HUGE // 10),
                                    content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/plain")

"""The dashboard's production settings for the load test, served on plain HTTP.

In production TLS ends in front of gunicorn and the cookies are Secure; the load
test's clients talk HTTP to 127.0.0.1, where a Secure cookie would never be sent
back. Everything else is what HOSTING_PRODUCTION=1 sets (run.py sets it).
"""

from hosting.settings import *  # noqa: F403

SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
SECURE_SSL_REDIRECT = False
SECURE_HSTS_SECONDS = 0

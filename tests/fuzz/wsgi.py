"""The dashboard as the full fuzz run serves it (gunicorn tests.fuzz.wsgi): hosting.wsgi
with tests/fuzz/settings.py, restoring the fuzz world after each request (world.py).

FUZZ_SEEDED names the JSON file seed_fuzz wrote (keys and ids).
"""

import json
import os

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.fuzz.settings"

from django.core.wsgi import get_wsgi_application  # noqa: E402

_app = get_wsgi_application()

from .world import restore  # noqa: E402  (models: after the apps are loaded)
with open(os.environ["FUZZ_SEEDED"]) as _f:
    _SEEDED = json.load(_f)


def application(environ, start_response):
    response = _app(environ, start_response)
    try:
        body = b"".join(response)
    finally:
        response.close()
    restore(_SEEDED)
    return [body]

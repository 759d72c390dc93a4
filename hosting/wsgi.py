"""WSGI entry point of the dashboard's web process (runs without root)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hosting.settings")
application = get_wsgi_application()

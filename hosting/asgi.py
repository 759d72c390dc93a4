"""ASGI entry point: the WebSockets of consoles and of the VPS pages' push (and
Django's pages, if asked).

Run by uvicorn next to the WSGI server (``make run``: hosting/stack.py;
production: docs/systemd/hosting-console.service behind the reverse proxy's
``/ws/``). Django's HTTP views are here too, so the same process can serve
everything, but the product sends only WebSockets to it. Sockets get the
browser's session and login from its cookie (Channels' AuthMiddlewareStack);
each consumer checks the Origin and the rights itself (hosting/routing.py lists
them).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hosting.settings")
django_http = get_asgi_application()  # sets Django up before the consumers are imported

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from hosting.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_http,
    "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
})

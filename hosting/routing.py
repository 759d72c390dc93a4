"""Every WebSocket route of the ASGI server (hosting/asgi.py)."""

from django.urls import path

from hosting.consoles.routing import websocket_urlpatterns as console_routes
from hosting.operations.live_socket import LiveConsumer

websocket_urlpatterns = [
    *console_routes,
    path("ws/live/<int:veid>/", LiveConsumer.as_asgi()),
]

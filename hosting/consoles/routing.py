"""WebSocket routes of the ASGI server (hosting/asgi.py)."""

from django.urls import path

from .consumer import ConsoleConsumer

websocket_urlpatterns = [
    path("ws/console/<int:veid>/", ConsoleConsumer.as_asgi()),
]

"""The VPS page's push socket (hosting/operations/live.py, live_socket.py), without the
engine: a real redis-server with the product's ACL users, the ASGI application
driven as a browser's socket (tests/hosting/test_console_web.py's helpers).

Who may listen (the page's own rule, the Origin, a signed-in session), who may
publish where (a node on its own channels only), that an operation's progress
and end reach the socket, and that signing out closes it.
"""

import asyncio
import time

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User

from hosting.customers.models import Customer
from hosting.operations import dispatch, executor, live, live_socket, services as operations
from hosting.operations.models import Operation
from tests.hosting.test_console_web import (browser, communicator, login, redis_socket,  # noqa: F401
                                            url_of, vps, web_side)

pytestmark = pytest.mark.django_db(transaction=True)  # the consumer's own DB threads


def socket_of(client, veid, **headers):
    return communicator(client, f"ws://testserver/ws/live/{veid}/", **headers)


async def heard(ws, timeout=5):
    message = await ws.receive_output(timeout)
    assert message == {"type": "websocket.send", "text": "changed"}, message


async def quiet(ws, seconds=0.5):
    assert await ws.receive_nothing(seconds), "a notice nobody sent"


def as_node(settings, redis_socket, name="hn1"):  # noqa: F811
    """This process as node ``name``'s worker: its name and its Redis login."""
    settings.NODE_NAME = name
    settings.CELERY_BROKER_URL = url_of(f"node-{name}", redis_socket)


def test_the_owner_hears_changes_from_the_node_and_the_web_side(
        vps, catalogue, settings, redis_socket, monkeypatch):  # noqa: F811
    client = browser(catalogue["user"])
    sent = []  # the queue took it (Celery's own sending is tests/hosting/test_dispatch*)
    monkeypatch.setattr(dispatch, "send", lambda op_id, queue: sent.append(op_id) or True)

    async def run():
        ws = socket_of(client, vps.veid)
        assert await ws.connect() == (True, None)
        await quiet(ws)  # nothing happened yet
        # The web side queues an operation: the page hears it once it is committed.
        await sync_to_async(operations.request)(vps, Operation.Kind.RESTART,
                                                catalogue["user"])
        await heard(ws)
        assert len(sent) == 1
        # The node's worker reports progress and the end, as the node's Redis user.
        op = await sync_to_async(Operation.objects.get)(environment=vps)
        await sync_to_async(as_node)(settings, redis_socket)
        ctx = await sync_to_async(executor.Context.of)(None, op)
        await sync_to_async(ctx.progress)(30, "rebooting")
        await heard(ws)
        await sync_to_async(executor._finish)(op, Operation.State.SUCCEEDED, "done")
        await heard(ws)
        # A burst (progress rows of a backup): told at once, then about once per
        # COALESCE window for the rest (a few ms of burst here: one more).
        await asyncio.sleep(3 * live_socket.COALESCE)  # the last notice's window is over
        for _ in range(20):
            await sync_to_async(live.changed)(vps.veid)
        told = 0
        while not await ws.receive_nothing(0.3):
            await heard(ws)
            told += 1
        assert 2 <= told <= 4, told
        await ws.disconnect()
    async_to_sync(run)()


def test_a_quiet_page_keeps_its_socket(vps, catalogue):  # noqa: F811
    """Longer without a notice than any Redis read timeout of the product (10 s)."""
    client = browser(catalogue["user"])

    async def run():
        ws = socket_of(client, vps.veid)
        assert (await ws.connect())[0]
        assert await ws.receive_nothing(11.0), "the socket closed while the page was quiet"
        await sync_to_async(live.changed)(vps.veid)
        await heard(ws)
        await ws.disconnect()
    async_to_sync(run)()


def test_other_logins_origins_and_signed_out_browsers_are_refused(vps, catalogue):  # noqa: F811
    other = User.objects.create_user("mallory", password="mallory-pass-1")
    Customer.objects.create(user=other)
    owner, mallory = browser(catalogue["user"]), browser(other)

    async def run():
        for ws in (socket_of(mallory, vps.veid),  # not theirs: same as no such VPS
                   socket_of(owner, vps.veid + 1),
                   socket_of(owner, vps.veid, origin="https://evil.example"),
                   socket_of(owner, vps.veid, origin=None),
                   socket_of(owner, vps.veid, host="evil.example")):
            accepted, _ = await ws.connect()
            assert not accepted
        ws = socket_of(owner, vps.veid)
        assert (await ws.connect())[0]  # the same browser, its own VPS, this site
        await ws.disconnect()
    async_to_sync(run)()
    # A signed-out session's cookie opens nothing.
    cookie = owner.cookies["sessionid"].value
    owner.logout()
    owner.cookies["sessionid"] = cookie

    async def after():
        assert not (await socket_of(owner, vps.veid).connect())[0]
    async_to_sync(after)()


def test_a_node_publishes_on_its_own_channels_only(redis_socket):  # noqa: F811
    node = login("node-hn1", redis_socket)
    assert node.publish(f"live:hn1:{4101}", b"1") == 0  # allowed (no one listens)
    for channel in ("live:hn1-2:4101", "live:web:4101", "hosting:asgi"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            node.publish(channel, b"1")
    listener = node.pubsub()
    with pytest.raises(redis.exceptions.NoPermissionError):
        listener.subscribe("live:hn1:4101")  # nodes listen to nothing
        listener.get_message(timeout=1)


def test_signing_out_closes_the_socket(vps, catalogue, monkeypatch):  # noqa: F811
    monkeypatch.setattr(live_socket, "RECHECK", 1.0)
    client = browser(catalogue["user"])

    async def run():
        ws = socket_of(client, vps.veid)
        assert (await ws.connect())[0]
        await sync_to_async(client.logout)()
        message = await ws.receive_output(5)
        assert message == {"type": "websocket.close", "code": live_socket.REVOKED}, message
        await ws.disconnect()
    async_to_sync(run)()


def test_no_redis_costs_only_the_notice(vps, settings, monkeypatch):  # noqa: F811
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(live, "_paused_until", {})
    live.changed(vps.veid)  # logged, not raised
    # Then no more tries for a while: a frozen Redis would cost each its timeout.
    assert live._paused_until["redis://127.0.0.1:1/0"] > time.monotonic() + 5


"""The web console's web side and relay (hosting/consoles/), without the engine.

A real redis-server with the product's ACL users carries the Channels layer and
the relay's lists; the ASGI application (hosting/asgi.py: cookies, sessions,
login, the consumer) is driven by Channels' WebsocketCommunicator; the node's
relay (consoles/relay.py) runs for real in a thread as the node's Redis user,
with a fake console (a socketpair) in place of ``Engine.console``: tickets,
refusals, the audit rows, ending by suspension, termination, idle time, signing
out and the console's end, the frames' sealing and the Redis users' scopes.
tests/browser/test_console.py does it all with the real engine and Chromium.
"""

import asyncio
import json
import socket
import subprocess
import threading
import time
from datetime import timedelta

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.test import Client
from django.utils import timezone

from hosting import controlplane as cp
from hosting.consoles import consumer as console_consumer, frames, relay, tickets
from hosting.consoles.models import ConsoleSession
from hosting.core.models import AuditLog
from hosting.customers.models import Customer
from hosting.environments.models import VirtualEnvironment as VE
from hosting.stack import wait_until
from tests.staffing import make_staff, verified_login

pytestmark = pytest.mark.django_db(transaction=True)  # the consumer's own DB threads
Reason = ConsoleSession.Reason
NODE = "hn1"
PASSWORDS = {"hosting": "web-pw", "node-hn1": "hn1-pw", "node-hn1-2": "hn1-2-pw"}


# -- a real Redis with the product's users -------------------------------------------------

@pytest.fixture(scope="module")
def redis_socket(tmp_path_factory):
    directory = tmp_path_factory.mktemp("console-redis")
    acl = directory / "users.acl"
    acl.write_text(cp.acl_file_text(PASSWORDS, ["hn1", "hn1-2"]))
    sock = directory / "redis.sock"
    proc = subprocess.Popen(["redis-server", "--dir", str(directory), "--save", "",
                             "--appendonly", "no", "--port", "0", "--unixsocket", str(sock),
                             "--aclfile", str(acl), "--daemonize", "no",
                             "--logfile", str(directory / "log")])
    wait_until(lambda: login("hosting", sock).ping(), 15, "redis-server did not come up")
    yield sock
    proc.kill()
    proc.wait(10)


def login(user, sock):
    return redis.Redis(unix_socket_path=str(sock), username=user, password=PASSWORDS[user],
                       socket_timeout=10)


def url_of(user, sock):
    return f"unix://{user}:{PASSWORDS[user]}@{sock}"


@pytest.fixture(autouse=True)
def web_side(settings, redis_socket):
    """The web side's settings as the ASGI server has them: its Redis login for the
    relay's lists and the Channels layer (redis, not in memory)."""
    settings.CELERY_BROKER_URL = url_of("hosting", redis_socket)
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"prefix": "hosting:asgi", "expiry": 30, "hosts": [{
            "address": url_of("hosting", redis_socket), "socket_timeout": 10}]}}}
    settings.CONSOLE_URL = ""
    settings.CONSOLE_RECHECK_SECONDS = 15
    settings.CONSOLE_IDLE_SECONDS = 900


# -- the node: the real relay, a fake console ---------------------------------------------

class FakeConsole:
    """What Engine.console returns, over a socketpair; the test holds the VE's end,
    which echoes what is typed (as a tty does) until the test ends the console."""

    def __init__(self):
        self.sock, self.ve_end = socket.socketpair()
        self.sizes = []
        self.typed = bytearray()
        threading.Thread(target=self._echo, daemon=True).start()

    def _echo(self):
        while True:
            try:
                data = self.ve_end.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.typed += data
            self.ve_end.sendall(data)

    def fileno(self):
        return self.sock.fileno()

    def recv(self, size=65536):
        return self.sock.recv(size)

    def send(self, data):
        self.sock.sendall(data)

    def resize(self, rows, cols):
        self.sizes.append((rows, cols))

    def close(self):
        self.sock.close()

    def end(self):
        """The VE stopped: its console ends."""
        self.ve_end.shutdown(socket.SHUT_RDWR)
        self.ve_end.close()


class FakeEngine:
    def __init__(self, fail=None):
        self.consoles, self.fail = [], fail

    def console(self, veid, rows=24, cols=80):
        if self.fail:
            raise self.fail
        console = FakeConsole()
        console.sizes.append((rows, cols))
        self.consoles.append(console)
        return console


@pytest.fixture
def node(monkeypatch, redis_socket):
    """Instead of publishing the relay task, run the node's relay in a thread, as the
    node's console worker would: its own Redis login, the real claim and bridge."""
    engine = FakeEngine()
    engine.results, engine.sent = [], []

    def start(row, rows, cols):
        engine.sent.append((row.node, str(row.pk), rows, cols))

        def run():
            engine.results.append(relay.run(row.node, str(row.pk), rows, cols, eng=engine,
                                            client=login(f"node-{row.node}", redis_socket)))
        threading.Thread(target=run, daemon=True).start()
    monkeypatch.setattr(console_consumer, "_start_relay", start)
    return engine


# -- the world: customers, a running VPS, browser sessions ---------------------------------

@pytest.fixture
def vps(catalogue):
    return VE.objects.create(veid=4101, owner=catalogue["customer"], plan=catalogue["plan"],
                             node=catalogue["node"], template=catalogue["template"],
                             hostname="console.example.com", actual_state="running",
                             desired_state="running")


def browser(user):
    """A signed-in browser (session cookie; two-factor verified for staff)."""
    client = Client()
    verified_login(client, user)
    return client


def ask_ticket(client, veid, expect=201):
    response = client.post(f"/api/v1/environments/{veid}/console/", content_type="application/json")
    assert response.status_code == expect, response.content
    return response.json()


class WebsocketCommunicator(ApplicationCommunicator):
    """channels.testing.WebsocketCommunicator's few lines (importing channels.testing
    imports daphne, its live server; we serve with uvicorn): a browser's socket."""

    def __init__(self, application, path, headers):
        from urllib.parse import unquote, urlsplit
        parts = urlsplit(path)
        super().__init__(application, {"type": "websocket", "path": unquote(parts.path),
                                       "query_string": parts.query.encode(),
                                       "headers": headers, "subprotocols": []})

    async def connect(self, timeout=1):
        """(True, None) when accepted, (False, close code) when refused."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        assert response["type"] == "websocket.accept", response
        return True, None

    async def send_to(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def disconnect(self, code=1000, timeout=1):
        """The socket is gone: the application ends (or is cancelled after ``timeout``:
        channels_redis's read of the consumer's channel may outlast a cancellation for
        up to its blocking read's timeout)."""
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)


def communicator(client, url, origin="http://testserver", host="testserver"):
    from hosting.asgi import application
    path = url.split("://", 1)[1].split("/", 1)[1]
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    headers = [(b"host", host.encode()), (b"cookie", cookie.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, "/" + path, headers=headers)


async def status(ws, timeout=10):
    """The next JSON status message (output in between is skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive_output(max(0.1, deadline - time.monotonic()))
        if message["type"] == "websocket.close":
            return {"type": "socket-closed", "code": message.get("code")}
        if message.get("text"):
            return json.loads(message["text"])


async def closed(ws, timeout=10):
    """(status message, close code) of a socket the server closes."""
    said = await status(ws, timeout)
    assert said["type"] == "closed", said
    message = await ws.receive_output(timeout)
    assert message["type"] == "websocket.close"
    await ws.disconnect()  # as the server tells the application once the socket is closed
    return said, message.get("code")


async def output(ws, wanted, timeout=10):
    """Console output until ``wanted`` was seen."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        message = await ws.receive_output(max(0.1, deadline - time.monotonic()))
        assert message["type"] == "websocket.send", message
        seen += message.get("bytes") or b""
    return seen


def row_of(ticket):
    return ConsoleSession.objects.get(ticket_digest=tickets.digest(ticket["ticket"]))


# -- tickets --------------------------------------------------------------------------------

def test_a_ticket_opens_the_console_once_and_bytes_flow_both_ways(catalogue, vps, node):
    owner = browser(catalogue["user"])
    ticket = ask_ticket(owner, vps.veid)
    assert set(ticket) == {"ticket", "url", "expires"}
    assert ticket["url"] == f"ws://testserver/ws/console/{vps.veid}/?ticket={ticket['ticket']}"
    row = row_of(ticket)
    assert row.opened is None and row.relay_key is None  # a ticket, not yet a session
    assert ticket["ticket"] not in json.dumps(
        list(ConsoleSession.objects.values_list("ticket_digest", "session_digest")))

    async def scenario():
        ws = communicator(owner, ticket["url"] + "&rows=30&cols=100")
        assert (await ws.connect(5))[0]
        assert await status(ws) == {"type": "open"}
        await ws.send_to(bytes_data=b"echo hello\r")
        assert b"echo hello" in await output(ws, b"hello\r")
        await ws.send_to(text_data=json.dumps({"type": "resize", "rows": 40, "cols": 120}))
        await ws.send_to(text_data="not json")  # ignored
        await asyncio.sleep(0.5)
        await ws.disconnect()
    async_to_sync(scenario)()

    console = node.consoles[0]
    assert console.sizes[:2] == [(30, 100), (40, 120)]
    assert bytes(console.typed) == b"echo hello\r"
    assert node.sent == [(NODE, str(row.pk), 30, 100)]
    wait_until(lambda: node.results, 10, "the relay did not end")
    assert node.results == ["closed by the web side (client)"]
    row.refresh_from_db()
    assert row.close_reason == Reason.CLIENT and row.closed and row.relay_started
    assert row.duration == row.closed - row.opened and row.relay_key is None
    assert row.username == "alice" and not row.staff and row.node == NODE
    audit = AuditLog.objects.get(action="ve.console")
    assert audit.actor == catalogue["user"] and audit.object_id == str(vps.veid)
    assert audit.detail["session"] == str(row.pk) and "echo" not in json.dumps(audit.detail)

    async def again():  # the same ticket a second time
        ws = communicator(owner, ticket["url"])
        assert (await ws.connect(5))[0]
        said, code = await closed(ws)
        assert code == 4403 and said["reason"] == "refused"
        assert said["message"] == "this ticket was used already"
    async_to_sync(again)()
    assert len(node.sent) == 1  # no relay started for it


def test_an_expired_ticket_is_refused_and_recorded(catalogue, vps, node):
    owner = browser(catalogue["user"])
    ticket = ask_ticket(owner, vps.veid)
    ConsoleSession.objects.update(ticket_expires=timezone.now() - timedelta(seconds=1))

    async def scenario():
        ws = communicator(owner, ticket["url"])
        assert (await ws.connect(5))[0]
        said, code = await closed(ws)
        assert (code, said["message"]) == (4403, "this ticket has expired")
    async_to_sync(scenario)()
    row = row_of(ticket)
    assert row.close_reason == Reason.REFUSED and row.detail == "this ticket has expired"
    assert node.sent == [] and not AuditLog.objects.filter(action="ve.console").exists()


def test_another_customers_ticket_and_vps_are_refused(catalogue, vps, node):
    from django.contrib.auth.models import User
    bob = User.objects.create_user("bob", password="bob-pass-1")
    Customer.objects.create(user=bob)
    owner, stranger = browser(catalogue["user"]), browser(bob)
    ask_ticket(stranger, vps.veid, expect=404)  # not his VPS: it does not exist for him
    ticket = ask_ticket(owner, vps.veid)

    async def scenario():  # Bob's browser presents Alice's ticket
        ws = communicator(stranger, ticket["url"])
        assert (await ws.connect(5))[0]
        said, code = await closed(ws)
        assert (code, said["message"]) == (4403, "this ticket is another login's")
        ws = communicator(owner, ticket["url"])  # used up by that try
        assert (await ws.connect(5))[0]
        assert (await closed(ws))[1] == 4403
    async_to_sync(scenario)()
    assert node.sent == []


def test_another_session_of_the_same_login_may_not_use_the_ticket(catalogue, vps, node):
    first, second = browser(catalogue["user"]), browser(catalogue["user"])
    ticket = ask_ticket(first, vps.veid)

    async def scenario():
        ws = communicator(second, ticket["url"])
        assert (await ws.connect(5))[0]
        said, code = await closed(ws)
        assert (code, said["message"]) == (4403, "this ticket is another session's")
    async_to_sync(scenario)()


@pytest.mark.parametrize("origin", [None, "https://evil.example", "http://testserver.evil",
                                    "null"])
def test_a_foreign_origin_is_refused_at_the_handshake(catalogue, vps, node, origin):
    owner = browser(catalogue["user"])
    ticket = ask_ticket(owner, vps.veid)

    async def scenario():
        ws = communicator(owner, ticket["url"], origin=origin)
        connected, _ = await ws.connect(5)
        assert not connected  # HTTP 403 to the browser; nothing else happened
        await ws.disconnect()
    async_to_sync(scenario)()
    assert row_of(ticket).opened is None and node.sent == []  # the ticket is still unused


def test_an_allowed_host_with_another_origin_than_the_tickets_is_refused(catalogue, vps, node,
                                                                          settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "other.example"]
    owner = browser(catalogue["user"])
    ticket = ask_ticket(owner, vps.veid)

    async def scenario():
        ws = communicator(owner, ticket["url"], origin="http://other.example")
        assert (await ws.connect(5))[0]
        said, code = await closed(ws)
        assert (code, said["message"]) == (4403, "this ticket was asked for by another site")
    async_to_sync(scenario)()


def test_who_may_ask_for_a_ticket(catalogue, vps, node):
    owner = browser(catalogue["user"])
    customer = catalogue["customer"]
    customer.status = Customer.Status.SUSPENDED
    customer.save()
    response = owner.post(f"/api/v1/environments/{vps.veid}/console/")
    assert response.status_code == 403 and "suspended" in response.json()["detail"]
    customer.status = Customer.Status.ACTIVE
    customer.save()
    VE.objects.filter(pk=vps.pk).update(actual_state="stopped", desired_state="stopped")
    response = owner.post(f"/api/v1/environments/{vps.veid}/console/")
    assert response.status_code == 409 and "stopped" in response.json()["detail"]
    VE.objects.filter(pk=vps.pk).update(actual_state="running", desired_state="running")
    assert owner.post(f"/api/v1/environments/{vps.veid}/console/")["Cache-Control"] == \
        "no-store"
    # Staff: support and administrators operate VPSes; billing and auditors do not.
    for role, expected in (("support", 201), ("administrator", 201), ("billing", 403),
                           ("auditor", 403)):
        staff = browser(make_staff(f"staff-{role}", role=role))
        assert staff.post(f"/api/v1/environments/{vps.veid}/console/").status_code == \
            expected, role
    # An API key is no browser session: the socket could not be tied to it.
    from hosting.core import tokens
    key = tokens.issue(catalogue["user"], name="script")[1]
    response = Client().post(f"/api/v1/environments/{vps.veid}/console/",
                             HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 403 and "browser session" in response.json()["detail"]


def test_staff_open_any_vps_console_and_it_is_audited(catalogue, vps, node):
    support = make_staff("sue", role="support")
    staff = browser(support)
    ticket = ask_ticket(staff, vps.veid)

    async def scenario():
        ws = communicator(staff, ticket["url"])
        assert (await ws.connect(5))[0]
        assert await status(ws) == {"type": "open"}
        await ws.disconnect()
    async_to_sync(scenario)()
    row = row_of(ticket)
    assert row.staff and row.username == "sue"
    audit = AuditLog.objects.get(action="ve.console")
    assert audit.actor == support and audit.detail["staff"] is True


# -- ending ---------------------------------------------------------------------------------

def open_console(client, veid):
    """An open console socket (the node has it) of ``client``'s browser session."""
    ticket = ask_ticket(client, veid)

    async def opened():
        ws = communicator(client, ticket["url"])
        assert (await ws.connect(5))[0]
        assert await status(ws) == {"type": "open"}
        return ws
    return ticket, opened


def test_suspending_the_customer_closes_their_console_at_once(catalogue, vps, node):
    from hosting.customers import services
    owner = browser(catalogue["user"])
    admin = make_staff("root-admin")
    ticket, opened = open_console(owner, vps.veid)

    async def scenario():
        ws = await opened()
        started = time.monotonic()
        await sync_to_async(services.set_status)(catalogue["customer"], "suspended", admin)
        said, code = await closed(ws, timeout=5)
        assert time.monotonic() - started < 3  # by the group message, not the recheck
        assert (code, said["reason"]) == (4423, "suspended")
        assert said["message"] == "your account has been suspended"
    async_to_sync(scenario)()
    row = row_of(ticket)
    assert row.close_reason == Reason.SUSPENDED and row.relay_key is None
    wait_until(lambda: node.results, 10, "the relay did not end")
    assert node.results[0].startswith("closed by the web side (suspended)")


@pytest.mark.parametrize("kind, reason, message", [
    ("destroy", "terminated", "the VPS is being terminated"),
    ("stop", "ended", "the VPS is being stopped")])
def test_terminating_or_stopping_the_vps_closes_its_consoles(catalogue, vps, node, kind,
                                                             reason, message):
    from hosting.operations import services
    owner = browser(catalogue["user"])
    ticket, opened = open_console(owner, vps.veid)

    async def scenario():
        ws = await opened()
        await sync_to_async(services.request)(vps, kind, catalogue["user"])
        said, code = await closed(ws, timeout=5)
        assert (code, said["reason"], said["message"]) == (4410, reason, message)
    async_to_sync(scenario)()
    assert row_of(ticket).close_reason == reason


def test_the_console_ending_on_the_node_closes_the_socket(catalogue, vps, node):
    owner = browser(catalogue["user"])
    ticket, opened = open_console(owner, vps.veid)

    async def scenario():
        ws = await opened()
        node.consoles[0].end()  # the VE stopped
        said, code = await closed(ws, timeout=5)
        assert (code, said["reason"]) == (4410, "ended")
    async_to_sync(scenario)()
    assert row_of(ticket).close_reason == Reason.ENDED
    wait_until(lambda: node.results, 10, "the relay did not end")
    assert node.results == ["the console ended"]


def test_an_idle_console_closes(catalogue, vps, node, settings):
    settings.CONSOLE_IDLE_SECONDS = 1.5
    owner = browser(catalogue["user"])
    ticket, opened = open_console(owner, vps.veid)

    async def scenario():
        ws = await opened()
        said, code = await closed(ws, timeout=6)
        assert (code, said["reason"]) == (4408, "idle")
    async_to_sync(scenario)()
    assert row_of(ticket).close_reason == Reason.IDLE


def test_signing_out_closes_the_sessions_consoles(catalogue, vps, node):
    owner = browser(catalogue["user"])
    ticket, opened = open_console(owner, vps.veid)

    async def scenario():
        ws = await opened()
        await sync_to_async(owner.post)("/logout/")
        said, code = await closed(ws, timeout=5)
        assert (code, said["reason"], said["message"]) == (4401, "revoked", "you signed out")
    async_to_sync(scenario)()


def test_the_recheck_closes_a_console_whose_group_message_was_lost(catalogue, vps, node,
                                                                    settings):
    """Suspended without a message (e.g. Redis was away then): the periodic check."""
    settings.CONSOLE_RECHECK_SECONDS = 1
    owner = browser(catalogue["user"])
    ticket, opened = open_console(owner, vps.veid)

    async def scenario():
        ws = await opened()
        await sync_to_async(Customer.objects.filter(pk=catalogue["customer"].pk).update)(
            status="suspended")
        said, code = await closed(ws, timeout=6)
        assert (code, said["reason"]) == (4423, "suspended")
    async_to_sync(scenario)()


def test_a_node_that_cannot_open_the_console_says_why(catalogue, vps, node):
    from ve.errors import StateError
    node.fail = StateError("VE 4101 was started without a console", 4101)
    owner = browser(catalogue["user"])
    ticket = ask_ticket(owner, vps.veid)

    async def scenario():
        ws = communicator(owner, ticket["url"])
        assert (await ws.connect(5))[0]
        said, code = await closed(ws)
        assert code == 4410 and "without a console" in said["message"]
    async_to_sync(scenario)()


def test_a_node_that_never_answers_closes_the_socket(catalogue, vps, monkeypatch):
    monkeypatch.setattr(console_consumer, "_start_relay", lambda row, rows, cols: None)
    monkeypatch.setattr(console_consumer, "OPEN_TIMEOUT", 1.5)
    owner = browser(catalogue["user"])
    ticket = ask_ticket(owner, vps.veid)

    async def scenario():
        ws = communicator(owner, ticket["url"])
        assert (await ws.connect(5))[0]
        said, code = await closed(ws, timeout=6)
        assert (code, said["reason"]) == (4502, "node")
    async_to_sync(scenario)()


def test_a_late_or_replayed_relay_message_does_nothing(catalogue, vps, node):
    """The node takes a session once: a second delivery of the task finds it taken."""
    owner = browser(catalogue["user"])
    ticket, opened = open_console(owner, vps.veid)

    async def scenario():
        ws = await opened()
        row = await sync_to_async(row_of)(ticket)
        assert await sync_to_async(relay.run)(NODE, str(row.pk), 24, 80,
                                              eng=FakeEngine()) == "not taken"
        assert await sync_to_async(relay.run)("hn1-2", str(row.pk), 24, 80,
                                              eng=FakeEngine()) == "not taken"
        await ws.disconnect()
    async_to_sync(scenario)()
    assert len(node.consoles) == 1


# -- the page -------------------------------------------------------------------------------

def test_the_vps_page_has_the_console_card_under_its_policy(catalogue, vps, settings):
    settings.CONSOLE_URL = ":8001"  # make run's: the ASGI server's port on the page's host
    owner = browser(catalogue["user"])
    ticket = ask_ticket(owner, vps.veid)
    assert ticket["url"].startswith(f"ws://testserver:8001/ws/console/{vps.veid}/?ticket=")
    settings.CONSOLE_URL = "ws://127.0.0.1:8001"
    assert ask_ticket(owner, vps.veid)["url"].startswith("ws://127.0.0.1:8001/ws/console/")
    response = owner.get(f"/vps/{vps.veid}/")
    page = response.content.decode()
    assert 'id="console"' in page and "vendor/xterm/xterm.js" in page and "js/console.js" in page
    nonce = page.split('data-style-nonce="', 1)[1].split('"', 1)[0]
    policy = response["Content-Security-Policy"]
    assert f"style-src 'self' 'nonce-{nonce}';" in policy and "unsafe-inline" not in policy
    assert "connect-src 'self' ws://127.0.0.1:8001;" in policy
    billing = browser(make_staff("bill", role="billing")).get(f"/vps/{vps.veid}/")
    assert 'id="console"' not in billing.content.decode()  # billing may not operate VPSes
    assert "nonce-" not in billing["Content-Security-Policy"]


# -- frames and Redis users -----------------------------------------------------------------

def test_frames_are_sealed_numbered_and_bound_to_their_session():
    key = frames.new_key()
    web = frames.Sealer(key, "s1", frames.IN)
    node = frames.Sealer(key, "s1", frames.OUT)
    first, second = web.seal(frames.DATA, b"root-password\r"), web.seal(frames.ALIVE)
    assert b"root-password" not in first
    assert node.open(first) == (frames.DATA, b"root-password\r")
    with pytest.raises(frames.BadFrame):
        node.open(first)  # replayed
    assert node.open(second) == (frames.ALIVE, b"")
    with pytest.raises(frames.BadFrame):  # another session's key or id
        frames.Sealer(key, "s2", frames.OUT).open(frames.Sealer(key, "s1", frames.IN)
                                                  .seal(frames.DATA, b"x"))
    tampered = bytearray(web.seal(frames.DATA, b"ls\r"))
    tampered[0] ^= 1
    with pytest.raises(frames.BadFrame):
        node.open(bytes(tampered))
    with pytest.raises(frames.BadFrame):  # a node's own frame sent back to it
        node.open(node.seal(frames.DATA, b"x"))
    assert frames.parse_resize(frames.resize_payload(50, 200)) == (50, 200)
    for bad in (frames.resize_payload(0, 80), frames.resize_payload(24, 5000), b"x"):
        with pytest.raises(frames.BadFrame):
            frames.parse_resize(bad)


def test_a_node_reaches_only_its_own_consoles_lists(redis_socket):
    """Node hn1 relays through console:hn1:*; another node's lists (hn1-2's too, whose
    name starts the same) are out of its reach; the web side reaches all."""
    hn1, hn1_2, web = (login(user, redis_socket) for user in ("node-hn1", "node-hn1-2",
                                                               "hosting"))
    own_in, own_out = frames.keys("hn1", "s1")
    other_in, other_out = frames.keys("hn1-2", "s2")
    web.lpush(own_in, b"typed")
    assert hn1.brpop([own_in], timeout=1) == (own_in.encode(), b"typed")
    hn1.lpush(own_out, b"shown")
    hn1.pexpire(own_out, 60_000)
    assert web.brpop([own_out], timeout=1)[1] == b"shown"
    web.lpush(other_in, b"typed")
    for call in (lambda: hn1.brpop([other_in], timeout=1), lambda: hn1.lpush(other_out, b"x"),
                 lambda: hn1.llen(other_in), lambda: hn1.delete(other_in),
                 lambda: hn1.lpush("console:hn1", b"x"), lambda: hn1.lpush("console:x", b"x"),
                 lambda: hn1.zadd("hosting:asgi:group:console-ve-1", {"x": 1})):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    assert hn1_2.brpop([other_in], timeout=1)[1] == b"typed"
    with pytest.raises(redis.exceptions.NoPermissionError):
        hn1_2.lpush(own_in, b"x")

"""The control plane's secrets: Redis users and the keys that sign Celery messages.

Used by ``Stack`` (``make run`` and the live tests make them at first run) and
by ``manage.py control_plane`` (production, see docs/security.md). Nothing
here logs a secret: passwords go to files made 0600 with O_EXCL, and Redis
gets only their SHA-256 (its ACL file's ``#<hex>`` form).

Redis users (one ACL rule set each, ``acl_rules``):

- ``hosting``: the web processes, beat and the housekeeping worker. They send
  operations to every node's queues, read them (the backstop re-send),
  consume ``hosting``, keep the Django cache and the Channels layer
  (``hosting:*``), relay every node's consoles (``console:*``) and listen to
  every VPS's changes (``live:*``, hosting/operations/live.py).
- ``node-<name>``: one per node, for its root workers. Only its own three
  queues, their bindings, its own unacknowledged-message keys (kombu's
  ``unacked_key`` etc. are per node, see ``node_transport_options``) and its
  own consoles' lists (``console:<name>:*``, hosting/consoles/frames.py); it
  publishes its VPSes' changes on ``live:<name>:*`` only, and listens to nothing:
  a node cannot read, take or fill another node's queue or console, nor the cache.

Signing (Celery's ``auth`` serializer, RSA keys and self-signed certificates):
one key for the web side (web, beat, housekeeping); each node signs what it
sends itself (the relay's re-sends, its chores) with a key of its own. The
web side trusts only its own certificate; a node trusts the web side's and
its own, never another node's.
"""

import datetime
import hashlib
import os
import secrets
from pathlib import Path

WEB_USER = "hosting"
WEB_KEY = "web"
# Commands each client needs (kombu's Redis transport, redis-py's lock, the Django
# cache); everything else (CONFIG, FLUSHALL, KEYS, MONITOR, DEBUG, SHUTDOWN, ...)
# is refused to all of them.
_CONNECTION = ["auth", "hello", "ping", "select", "client|setname",
               "client|id", "quit", "reset", "echo"]
_QUEUES = ["lpush", "rpush", "brpop", "rpop", "llen", "lrange", "exists", "del",
           "sadd", "smembers", "srem", "hset", "hget", "hdel", "hvals", "zadd", "zrem",
           "zrevrangebyscore", "set", "get", "pexpire", "multi", "exec", "discard", "watch",
           "unwatch", "evalsha", "eval", "script|load", "script|exists"]
# The Channels layer (channels_redis: sorted sets, its Lua scripts) of the console sockets.
_CHANNELS = ["zadd", "zrem", "zcount", "zrange", "zremrangebyscore", "zpopmin", "bzpopmin",
             "expire", "del", "eval"]
# Pages' push (hosting/operations/live.py): nodes and the web side publish, the web
# side's sockets listen.
_PUSH = ["publish"]
_LISTEN = ["subscribe", "unsubscribe"]
_CACHE = ["get", "set", "setex", "psetex", "getex", "getdel", "del", "exists", "expire",
          "pexpire", "persist", "incr", "incrby", "decr", "decrby", "mget", "mset", "ttl",
          "pttl", "scan", "unlink", "type"]


def node_user(node_name):
    return f"node-{node_name}"


def node_key(node_name):
    return f"node-{node_name}"


def node_transport_options(node_name):
    """kombu options that keep a node's unacknowledged messages under keys of its own."""
    return {"unacked_key": f"unacked.node.{node_name}",
            "unacked_index_key": f"unacked_index.node.{node_name}",
            "unacked_mutex_key": f"unacked_mutex.node.{node_name}"}


def _keys(*patterns):
    return " ".join(f"~{p}" for p in patterns)


def _commands(*groups):
    names = sorted({c for group in groups for c in group})
    return " ".join(f"+{c}" for c in names)


def console_keys(node_name):
    """The key pattern of node ``node_name``'s console lists (node names have no ':', so
    no node's pattern matches another's lists)."""
    return f"console:{node_name}:*"


def acl_rules(node_names):
    """{user: rules} (without the password) for the web side and each node."""
    rules = {WEB_USER: "resetchannels &live:* " + _keys(
        "hosting", "hosting:*", "node.*", "_kombu.binding.*", "unacked", "unacked_index",
        "unacked_mutex", "console:*") + " -@all "
        + _commands(_CONNECTION, _QUEUES, _CACHE, _CHANNELS, _PUSH, _LISTEN)}
    for name in node_names:
        q, transport = f"node.{name}", node_transport_options(name)
        queues = (q, f"{q}.chores", f"{q}.console")
        rules[node_user(name)] = f"resetchannels &{live_channels(name)} " + _keys(
            *queues, *(f"_kombu.binding.{queue}" for queue in queues),
            *transport.values(), console_keys(name)) + " -@all " + _commands(_CONNECTION,
                                                                             _QUEUES, _PUSH)
    return rules


def live_channels(name):
    """The pub/sub channel pattern on which ``name`` (a node, or "web") tells pages that a
    VPS changed (hosting/operations/live.py): a node publishes there only."""
    return f"live:{name}:*"


def acl_file_text(passwords, node_names):
    """An ACL file for redis-server's ``aclfile``: the default user off, every other
    user with its password's SHA-256 only.

    The default user has no password and is off, so no client is ever it: new
    connections must log in as one of the others. It still holds every right
    because Redis (7.0 to 7.2 here) replays its append-only file as the default
    user and re-checks the rights of each MULTI/EXEC it replays (redis#14541):
    without them the queues' transactions are dropped at every restart, and
    with them the operations those messages carried.
    """
    lines = ["user default off resetchannels ~* &* +@all"]
    for user, rules in acl_rules(node_names).items():
        digest = hashlib.sha256(passwords[user].encode()).hexdigest()
        lines.append(f"user {user} on #{digest} {rules}")
    return "\n".join(lines) + "\n"


def write_private(path, text, uid=None, gid=None):
    """Create ``path`` 0600 (never following a link), owned by uid:gid if given."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if uid is not None:
            os.chown(tmp, uid, gid if gid is not None else -1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def password_file(path, uid=None, gid=None):
    """The password kept in ``path``; made (random, 0600) on first use."""
    path = Path(path)
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32) + "\n", uid, gid)
    elif uid is not None:
        os.chown(path, uid, gid if gid is not None else -1, follow_symlinks=False)
    return path.read_text().strip()


def signing_pair(directory, name, uid=None, gid=None, days=3650):
    """``directory/<name>.key`` (0600) and ``<name>.pem`` (its self-signed certificate,
    0644), made once. Returns (key path, certificate path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    directory = Path(directory)
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    if key_path.exists() and cert_path.exists():
        if uid is not None:
            os.chown(key_path, uid, gid if gid is not None else -1, follow_symlinks=False)
        return key_path, cert_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hosting signing {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode(), uid, gid)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)
    return key_path, cert_path


def trust_dir(directory, name, certificates):
    """``directory/trust-<name>/`` (``trust/`` without a name) holding copies of
    ``certificates`` and nothing else: the cert store of whoever signs as ``name``."""
    trust = Path(directory) / (f"trust-{name}" if name else "trust")
    trust.mkdir(exist_ok=True)
    os.chmod(trust, 0o755)
    wanted = {Path(c).name: Path(c).read_bytes() for c in certificates}
    for old in trust.iterdir():
        if old.name not in wanted:
            old.unlink()
    for file_name, data in wanted.items():
        (trust / file_name).write_bytes(data)
        os.chmod(trust / file_name, 0o644)
    return trust


def not_this_node(node_name):
    """True (and logged) if this worker serves a node other than ``node_name``.

    A signature covers a message's arguments, not its task name: a node's
    chores tasks take the node's name and do nothing for another node's, so a
    signed body replayed under another task name or into another queue is
    harmless."""
    import logging

    from django.conf import settings
    if settings.NODE_NAME and node_name != settings.NODE_NAME:
        logging.getLogger(__name__).warning(
            "refused a task for node %r on node %s", node_name, settings.NODE_NAME)
        return True
    return False

"""Run the whole product on one machine: Redis, root node workers, housekeeping, web.

``manage.py runstack`` (what ``make run`` calls) and the end-to-end tests both
use ``Stack``. Every process gets its own session so it can be stopped, or
killed with all its children, as a group. The web server and the housekeeping
worker (with Celery beat) run as an unprivileged user; only the node workers,
which drive the engine, run as root. ``restart`` starts a process that
died the way it was started (``hosting.supervisor`` decides when).

The control plane assumes breach (docs/security.md): Redis knows no
anonymous user, the web side and each node log in as users of their own
(``hosting.controlplane``), and every Celery message is signed. ``prepare``
makes the passwords and keys once, in ``<data dir>/secrets/`` (root's; the
web side's own files are the web user's, all 0600), and each process gets
only its side's: paths to files in its environment, never a secret itself.

A stack runs one node or several (``nodes=3``; ``make run NODES=3``), each a
``hosting.stacknode.StackNode`` with processes of its own; with ``dc_netns``
their namespaces share a data-centre segment (``hosting.datacentre``) and
each node runs its migration sshd there. The single-node accessors
(``node_name``, ``node_netns``, ``start_node_worker()`` ...) are node 1's.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hosting import datacentre
from hosting.stacknode import StackNode

BASE_DIR = Path(__file__).resolve().parent.parent
UNPRIVILEGED = "hosting"
# uvicorn's options for the consoles' sockets (also in docs/systemd/hosting-console.service):
# the sans-I/O websockets protocol, messages up to 1 MiB (a big paste), Django has no
# lifespan handler, and no access log (a socket's URL carries its ticket).
ASGI_OPTIONS = ["--ws", "websockets-sansio", "--ws-max-size", str(1 << 20), "--lifespan", "off",
                "--no-access-log", "--no-server-header"]


def node_name_of_host():
    """This host's name as a node name (lower case, letters, digits and '-')."""
    raw = socket.gethostname().split(".")[0].lower()
    name = "".join(c if c.isalnum() else "-" for c in raw).strip("-")[:63]
    return name or "local"


def can_read_checkout(user):
    """True if ``user`` can read this checkout (the web process imports it as that user)."""
    probe = subprocess.run(["/usr/bin/test", "-r", str(BASE_DIR / "manage.py")], user=user,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


class Stack:
    """The product's processes, started in order and stopped together."""

    def __init__(self, data_dir, node_name=None, web_port=8000, redis_url=None,
                 web_user=UNPRIVILEGED, extra_env=None, log_dir=None, node_netns=None,
                 nodes=1, dc_netns=None, asgi_port=None):
        """``nodes``: how many nodes to run (node 1 is ``node_name``, the others are
        derived from it, see ``hosting.stacknode``). ``dc_netns``: the namespace of
        the data-centre segment joining the nodes' namespaces (None: no segment, no
        migration sshds). ``asgi_port``: the ASGI server's (the consoles' WebSockets;
        default the web port + 1)."""
        self.data_dir = Path(data_dir)
        self.web_port = web_port
        self.asgi_port = asgi_port or web_port + 1
        self.redis_url = redis_url
        self.web_user = web_user
        self.extra_env = dict(extra_env or {})
        self.log_dir = Path(log_dir or self.data_dir / "log")
        self.dc_netns = dc_netns
        first = StackNode(name=node_name or node_name_of_host(), netns=node_netns,
                          on_dc=bool(dc_netns), inherited=self.extra_env)
        self.nodes = [first] + [StackNode.extra(first, index, self.data_dir)
                                for index in range(2, nodes + 1)]
        self.processes = {}
        self.specs = {}  # name -> (argv, user, role, env): how to start it again
        self.started_at = {}  # name -> time.monotonic() of its last start
        self.secrets_dir = self.data_dir / "secrets"

    # Node 1, as single-node callers know it.

    @property
    def node_name(self):
        return self.nodes[0].name

    @property
    def node_netns(self):
        return self.nodes[0].netns

    @node_netns.setter
    def node_netns(self, name):
        """Name node 1's namespace (the other nodes' names follow it)."""
        for node in self.nodes:
            node.netns = f"{name}-{node.index}" if name and node.index > 1 else name

    def _node(self, node):
        """``node`` if it is one of ours, else node 1 (None, "node": the single-node names)."""
        return node if isinstance(node, StackNode) else self.nodes[0]

    # -- control plane secrets --------------------------------------------

    def prepare_control_plane(self):
        """Make (once) the Redis passwords and the signing keys of the web side and of
        each node, and the trust store of each (docs/security.md): a node trusts the
        web side and itself, never another node."""
        from hosting import controlplane as cp
        self.data_dir.mkdir(parents=True, exist_ok=True)
        web = pwd.getpwnam(self.web_user) if self.web_user else None
        uid, gid = (web.pw_uid, web.pw_gid) if web else (None, None)
        self.secrets_dir.mkdir(exist_ok=True)
        os.chown(self.secrets_dir, 0, gid or 0)
        os.chmod(self.secrets_dir, 0o710)  # the web user may open its own files, list none
        cp.password_file(self.secrets_dir / f"redis-{cp.WEB_USER}.password", uid, gid)
        web_key, web_cert = cp.signing_pair(self.secrets_dir, cp.WEB_KEY, uid, gid)
        cp.trust_dir(self.secrets_dir, cp.WEB_KEY, [web_cert])
        for node in self.nodes:
            cp.password_file(self._node_password_file(node))
            _, node_cert = cp.signing_pair(self.secrets_dir, cp.node_key(node.name))
            cp.trust_dir(self.secrets_dir, cp.node_key(node.name), [web_cert, node_cert])

    def _node_password_file(self, node=None):
        from hosting import controlplane as cp
        return self.secrets_dir / f"redis-{cp.node_user(self._node(node).name)}.password"

    def control_env(self, role="web"):
        """The environment that gives a process of ``role`` its Redis login and signing
        key (empty before ``prepare_control_plane``): "web", "node" (node 1) or a
        ``StackNode`` of this stack; None: nothing."""
        from hosting import controlplane as cp
        if role is None:
            return {}
        if role == "web":
            user, key = cp.WEB_USER, cp.WEB_KEY
            password = self.secrets_dir / f"redis-{cp.WEB_USER}.password"
        else:
            node = self._node(role)
            user, key = cp.node_user(node.name), cp.node_key(node.name)
            password = self._node_password_file(node)
        if not password.exists():
            return {}
        return {"HOSTING_REDIS_USER": user, "HOSTING_REDIS_PASSWORD_FILE": str(password),
                "HOSTING_SIGNING_KEY": str(self.secrets_dir / f"{key}.key"),
                "HOSTING_SIGNING_CERT": str(self.secrets_dir / f"{key}.pem"),
                "HOSTING_SIGNING_TRUST": str(self.secrets_dir / f"trust-{key}" / "*.pem")}

    def redis_client_url(self, role="web"):
        """redis-py's URL of this stack's Redis with the login of ``role`` (for tools
        and tests; not for logs)."""
        from urllib.parse import quote
        env = self.control_env(role)
        url = self.redis_url.replace("redis+socket://", "unix://")
        if not env:
            return url
        password = Path(env["HOSTING_REDIS_PASSWORD_FILE"]).read_text().strip()
        scheme, rest = url.split("://", 1)
        return (f"{scheme}://{quote(env['HOSTING_REDIS_USER'], safe='')}:"
                f"{quote(password, safe='')}@{rest}")

    # -- environment -------------------------------------------------------

    def env(self, role="web", **more):
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="hosting.settings",
                   HOSTING_DATA_DIR=str(self.data_dir), PYTHONPATH=str(BASE_DIR),
                   HOSTING_REDIS_URL=self.redis_url or "", **self.extra_env)
        for name in ("HOSTING_REDIS_USER", "HOSTING_REDIS_PASSWORD_FILE",
                     *(f"HOSTING_SIGNING_{v}" for v in ("KEY", "CERT", "TRUST"))):
            env.pop(name, None)  # this stack's own, not the caller's
        env.update(self.control_env(role))
        if "HOSTING_SECRET_KEY" not in os.environ:
            env["HOSTING_SECRET_KEY"] = self._secret_key()
        env.update(more)
        return env

    def _spawn(self, name, argv, user=None, role="web", **env):
        """Start ``argv`` as process ``name`` in its own session; ``restart(name)`` starts
        it the same way. The web user's processes get umask 077 (nothing they write is
        for other local users); root's keep theirs: the engine makes VE directories that
        the VEs' own (shifted) users must traverse."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.log_dir, 0o700)
        log = open(self.log_dir / f"{name}.log", "ab")
        if user:  # its own HOME: root's is not readable (gunicorn keeps state there)
            env.setdefault("HOME", str(self.data_dir))
        proc = subprocess.Popen(argv, cwd=BASE_DIR, env=self.env(role, **env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                user=user, group=user and pwd.getpwnam(user).pw_gid,
                                umask=0o077 if user else -1)
        log.close()
        self.processes[name] = proc
        self.specs[name] = (argv, user, role, env)
        self.started_at[name] = time.monotonic()
        return proc

    def restart(self, name):
        """Start process ``name`` again as it was started last (after it died)."""
        argv, user, role, env = self.specs[name]
        return self._spawn(name, argv, user, role, **env)

    def reap(self, name):
        """Kill what is left of dead process ``name``'s session (a dead Celery or gunicorn
        master's children), as systemd does before it restarts a service."""
        proc = self.processes[name]
        if self._watcher_node(name):
            return  # its twin lives in its session and must go on serving running VEs
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()

    def manage(self, *args, user=None):
        """Run a manage.py command to completion (raises on failure)."""
        subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], cwd=BASE_DIR,
                       env=self.env(), check=True, user=user,
                       group=user and pwd.getpwnam(user).pw_gid, umask=0o077 if user else -1)

    # -- processes ---------------------------------------------------------

    def _secret_key(self):
        """The Django secret of this installation, made once (root-only file)."""
        path = self.data_dir / "secret-key"
        if not path.exists():
            import secrets
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(50))
        return path.read_text().strip()

    def prepare(self):
        """Lay out the data dir and migrate the database.

        The data dir and everything root opens in it (logs, Redis, secrets)
        stay root's; only ``db/`` belongs to the web user, and its entries are
        handed over without following symlinks the web user could plant.
        Nothing in it is for other local users: the data dir and ``redis/``
        (the broker's socket) are reachable by the web user's group only,
        ``db/`` by the web user only and its files are 0600.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        group = pwd.getpwnam(self.web_user).pw_gid if self.web_user else 0
        os.chown(self.data_dir, 0, group)
        os.chmod(self.data_dir, 0o710 if self.web_user else 0o700)
        (self.data_dir / "static").mkdir(exist_ok=True)  # STATIC_ROOT (read-only use)
        os.chmod(self.data_dir / "static", 0o755)
        db = self.data_dir / "db"
        db.mkdir(exist_ok=True)
        os.chmod(db, 0o700)
        if self.web_user:
            account = pwd.getpwnam(self.web_user)
            for path in [db, *db.iterdir()]:
                os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
        # As the web user (no privilege to misuse); -R skips symlinks it meets.
        subprocess.run(["chmod", "-R", "go-rwx", str(db)], check=True, user=self.web_user,
                       group=group if self.web_user else None)
        self.prepare_control_plane()
        self.manage("migrate", "--no-input", "-v", "0", user=self.web_user)
        self._keep_sqlite_open()

    def _keep_sqlite_open(self):
        """Hold the SQLite database open, as the web user, while the stack runs.

        SQLite removes its -wal and -shm files when the last connection
        closes, and whoever opens it next creates them. When that is a root
        process, the files are root's for a moment and a web process opening
        them then is stuck read-only ("attempt to write a readonly
        database"). One connection held open keeps them the web user's.
        """
        if os.environ.get("DATABASE_URL") or not self.web_user or "db-keeper" in self.processes:
            return
        database = self.data_dir / "db" / "hosting.sqlite3"
        self._spawn("db-keeper", [sys.executable, "-c",
                                  "import sqlite3, sys, time\n"
                                  "db = sqlite3.connect(sys.argv[1])\n"
                                  "db.execute('select count(*) from sqlite_master').fetchall()\n"
                                  "while True: time.sleep(3600)", str(database)],
                    user=self.web_user, role=None)
        wait_until(lambda: (self.data_dir / "db" / "hosting.sqlite3-shm").exists(), 15,
                   "the database keeper did not open the database")

    def start_redis(self, port=None):
        """Start a private redis-server; set redis_url to its unix socket.

        The socket reaches every process, also the node worker inside its own
        network namespace; ``port`` (on 127.0.0.1 of this network namespace,
        which no VE's reaches) is for other tools. No anonymous user: the web
        side and the node log in as their own ACL users (``hosting.controlplane``;
        the ACL file holds only the passwords' SHA-256).
        """
        from hosting import controlplane as cp
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        group = pwd.getpwnam(self.web_user).pw_gid if self.web_user else 0
        os.chown(redis_dir, 0, group)
        os.chmod(redis_dir, 0o710)  # the socket is reachable by root and the web user only
        sock = redis_dir / "redis.sock"
        self.prepare_control_plane()
        passwords = {cp.WEB_USER: cp.password_file(
                         self.secrets_dir / f"redis-{cp.WEB_USER}.password")}
        for node in self.nodes:
            passwords[cp.node_user(node.name)] = cp.password_file(self._node_password_file(node))
        acl = redis_dir / "users.acl"
        cp.write_private(acl, cp.acl_file_text(passwords, [n.name for n in self.nodes]))
        # The append-only file keeps the queues across a restart or crash of Redis
        # (at most the last second of messages is lost; the node's relay resends those).
        argv = [shutil.which("redis-server") or "redis-server", "--dir", str(redis_dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--daemonize", "no", "--unixsocket", str(sock), "--unixsocketperm", "777",
                "--aclfile", str(acl), "--protected-mode", "yes"]
        argv += ["--bind", "127.0.0.1", "--port", str(port)] if port else ["--port", "0"]
        self.redis_url = f"redis+socket://{sock}"
        self._spawn("redis", argv, role=None)
        wait_until(lambda: _redis_ping(self.redis_client_url()), 15,
                   "redis-server did not come up")

    def prepare_node_netns(self, host_addresses=()):
        """Create (once) the named network namespace of each node, where its VEs are wired
        in, its directories, and with ``dc_netns`` the data-centre segment joining them.

        Demos and tests use them so that VE traffic never reaches the machine's
        real network: the namespaces have no way out. ``host_addresses`` (with
        prefix) go on each one's loopback, e.g. the pools' gateways, so VEs can
        reach "the host" on every node.
        """
        from pyroute2 import IPRoute, netns
        first_root = self.nodes[0].effective("VE_ROOT")
        for node in self.nodes:
            node.prepare_dirs(template_source=first_root)
            if not node.netns:
                continue
            if node.netns not in netns.listnetns():
                netns.create(node.netns)
            with IPRoute(netns=node.netns) as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                have = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=lo)}
                for cidr in host_addresses:
                    address, prefix = cidr.split("/")
                    if address not in have:
                        ipr.addr("add", index=lo, address=address, prefixlen=int(prefix))
        if self.dc_netns:
            datacentre.ensure_segment(self.dc_netns)
            made = [datacentre.join(self.dc_netns, node.netns, node.index)
                    for node in self.nodes]
            if any(made):
                for node in self.nodes:
                    datacentre.forget_neighbours(node.netns)
                datacentre.forget_neighbours(self.dc_netns, datacentre.BRIDGE)

    def remove_node_netns(self):
        """Remove the nodes' namespaces and the segment's (their links go with them)."""
        for name in [*(n.netns for n in self.nodes if n.netns), self.dc_netns]:
            if name:
                datacentre.remove(name)

    def start_nodes(self, concurrency=2):
        """Every node's watcher, migration sshd (on the segment) and three workers."""
        for node in self.nodes:
            self.start_node_watcher(node)
            if node.on_dc:
                self.start_migration_sshd(node)
            self.start_node_worker(concurrency, node=node)
            self.start_node_chores(node=node)
            self.start_node_console(node=node)

    def start_node_watcher(self, node=None):
        """The engine's node watcher (root, where the VEs' host side lives): reboots and
        power-offs from inside, clean-up, sysinfo answers, LXCFS; VEs marked onboot."""
        node = self._node(node)
        return self._spawn(node.process("node-watcher"),
                           [*node.in_netns(), sys.executable, "-m", "ve.cli", "watch",
                            "--onboot"], role=None, **node.engine_env())

    def start_migration_sshd(self, node=None):
        """The node's migration sshd (``vectl migration serve``) on its data-centre address,
        in its namespace: where other nodes push the VEs they migrate to it."""
        node = self._node(node)
        return self._spawn(node.process("node-sshd"),
                           [*node.in_netns(), sys.executable, "-m", "ve.cli", "migration",
                            "serve", node.migrate_address], role=None, **node.engine_env())

    def node_watcher_pid(self, node=None):
        """The PID of the watcher serving the node, whoever started it (None: none)."""
        from ve import watch
        from ve.paths import Layout
        root = self._node(node).effective("VE_ROOT")
        try:
            return watch.request(Layout(root), {"op": "ping"}, timeout=1.0)["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def watcher_took_over(self, name):
        """True if ``name`` is a node watcher whose twin serves its node on (after it
        died): it is not to be restarted, nor its session killed."""
        node = self._watcher_node(name)
        return node is not None and self.node_watcher_pid(node) is not None

    def _watcher_node(self, name):
        """The node whose watcher process is ``name`` (None: not a watcher)."""
        return next((n for n in self.nodes if n.process("node-watcher") == name), None)

    def start_node_worker(self, concurrency=2, shared=False, node=None):
        """The node's operations worker (root): consumes node.<name>, drives the engine,
        beats for the node. ``shared``: the old layout, one pool for operations and
        chores alike (the benchmark compares it)."""
        node = self._node(node)
        queues = node.queue + (f",{node.chores_queue}" if shared else "")
        return self._node_worker(node, "node-worker", queues, node.queue, concurrency)

    def start_node_chores(self, concurrency=2, node=None):
        """The node's chores worker (root): sampling, traffic and reconcile, in a pool
        of their own so that operations never wait behind them."""
        node = self._node(node)
        return self._node_worker(node, "node-chores", node.chores_queue,
                                 f"chores.{node.name}", concurrency)

    def start_node_console(self, concurrency=32, node=None):
        """The node's console worker (root): relays its VPSes' web consoles
        (hosting/consoles/relay.py), each a long wait on a socket and on Redis, so a pool
        of threads of its own rather than the operations' or chores' few processes."""
        node = self._node(node)
        return self._node_worker(node, "node-console", node.console_queue,
                                 f"console.{node.name}", concurrency, pool="threads")

    def _node_worker(self, node, role, queues, worker_name, concurrency, pool=None):
        return self._spawn(
            node.process(role),
            [*node.in_netns(), sys.executable, "-m", "celery", "-A", "hosting", "worker",
             "-Q", queues, "-n", f"{worker_name}@%h", "-c", str(concurrency),
             *(["-P", pool] if pool else []),
             "--without-gossip", "--without-mingle", "-l", "INFO"],
            role=node, **node.worker_env())

    def start_housekeeping(self):
        """Unprivileged worker for the 'hosting' queue, with Celery beat embedded."""
        return self._spawn(
            "housekeeping",
            [sys.executable, "-m", "celery", "-A", "hosting", "worker", "-Q", "hosting",
             "-n", "housekeeping@%h", "-c", "1", "-B", "-s",
             str(self.data_dir / "db" / "celerybeat-schedule"), "--without-gossip",
             "--without-mingle", "-l", "INFO"],
            user=self.web_user)

    @property
    def console_url(self):
        """Where browsers open consoles' WebSockets (HOSTING_CONSOLE_URL): the ASGI
        server's port on the host the page was loaded from (no reverse proxy here to send
        /ws/ there from the web port, as in production)."""
        return f":{self.asgi_port}"

    def start_web(self):
        proc = self._spawn(
            "web", [sys.executable, "-m", "gunicorn", "hosting.wsgi:application", "--bind",
                    f"127.0.0.1:{self.web_port}", "--workers", "2", "--threads", "4",
                    "--access-logfile", "-"], user=self.web_user,
            HOSTING_CONSOLE_URL=self.console_url)
        wait_until(lambda: _http_up(self.web_port), 30, "the web server did not come up")
        return proc

    def start_asgi(self):
        """The ASGI server (uvicorn, unprivileged): the consoles' WebSockets
        (hosting/asgi.py). No access log: a socket's URL carries its one-time ticket."""
        proc = self._spawn(
            "asgi", [sys.executable, "-m", "uvicorn", "hosting.asgi:application", "--host",
                     "127.0.0.1", "--port", str(self.asgi_port), *ASGI_OPTIONS],
            user=self.web_user, HOSTING_CONSOLE_URL=self.console_url)
        wait_until(lambda: _http_up(self.asgi_port), 30, "the ASGI server did not come up")
        return proc

    def wait_for_node(self, timeout=60):
        """Wait until the node workers have registered every node as online."""
        import django
        django.setup()
        from hosting.nodes.models import Node
        for node in self.nodes:
            wait_until(lambda: Node.objects.filter(name=node.name, state="online").exists(),
                       timeout, f"node {node.name} did not come online (see "
                       f"{node.process('node-worker')}.log)")

    def kill(self, name):
        """SIGKILL a process and everything in its session (a crash, not a stop)."""
        proc = self.processes.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self, timeout=60):
        """Stop everything: web first, then the nodes, Redis last.

        Only each main process gets SIGTERM (a Celery worker then finishes its
        running operations, a warm shutdown); the group is killed only if it
        overstays ``timeout``.
        """
        order = ["web", "asgi", "housekeeping"]
        for node in self.nodes:
            order += [node.process(role) for role in ("node-worker", "node-chores",
                                                      "node-console", "node-sshd",
                                                      "node-watcher")]
        order += ["redis", "db-keeper"]
        for name in [*order, *(n for n in list(self.processes) if n not in order)]:
            self.stop_process(name, timeout)

    def stop_process(self, name, timeout=60):
        """SIGTERM process ``name``; SIGKILL its group if it overstays ``timeout``."""
        proc = self.processes.pop(name, None)
        if proc is None:
            return
        try:
            proc.terminate()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
        except ProcessLookupError:
            pass
        proc.wait()

    def stop_node_watcher(self, timeout=60, node=None):
        """Stop whatever watcher serves the node (ours, or the twin that carries on after
        it while VEs run), even with VEs running: they lose their notifiers."""
        node = self._node(node)
        pid = self.node_watcher_pid(node)
        if pid is None:
            return
        from ve import watch
        from ve.paths import Layout
        try:
            watch.request(Layout(node.effective("VE_ROOT")), {"op": "stop"})
        except OSError:
            pass  # gone meanwhile
        wait_until(lambda: self.node_watcher_pid(node) is None, timeout,
                   f"the node watcher of {node.name} did not stop")


def wait_until(predicate, timeout, message):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(message)


def _redis_ping(url):
    import redis
    with redis.Redis.from_url(url.replace("redis+socket://", "unix://")) as client:
        return client.ping()


def port_taken(port):
    """True if something listens on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _http_up(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True

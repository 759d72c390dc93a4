"""Run the whole product on one machine: Redis, a root node worker, housekeeping, web.

``manage.py runstack`` (what ``make run`` calls) and the end-to-end tests both
use ``Stack``. Every process gets its own session so it can be stopped, or
killed with all its children, as a group. The web server and the housekeeping
worker (with Celery beat) run as an unprivileged user; only the node worker,
which drives the engine, runs as root.
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

BASE_DIR = Path(__file__).resolve().parent.parent
UNPRIVILEGED = "hosting"


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
                 web_user=UNPRIVILEGED, extra_env=None, log_dir=None):
        self.data_dir = Path(data_dir)
        self.node_name = node_name or node_name_of_host()
        self.web_port = web_port
        self.redis_url = redis_url
        self.web_user = web_user
        self.extra_env = dict(extra_env or {})
        self.log_dir = Path(log_dir or self.data_dir / "log")
        self.processes = {}

    # -- environment -------------------------------------------------------

    def env(self, **more):
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="hosting.settings",
                   HOSTING_DATA_DIR=str(self.data_dir), PYTHONPATH=str(BASE_DIR),
                   HOSTING_REDIS_URL=self.redis_url or "", **self.extra_env)
        env.update(more)
        return env

    def _spawn(self, name, argv, user=None, **env):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        if user:  # its own HOME: root's is not readable (gunicorn keeps state there)
            env.setdefault("HOME", str(self.data_dir))
        proc = subprocess.Popen(argv, cwd=BASE_DIR, env=self.env(**env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                user=user, group=user and pwd.getpwnam(user).pw_gid)
        log.close()
        self.processes[name] = proc
        return proc

    def manage(self, *args, user=None):
        """Run a manage.py command to completion (raises on failure)."""
        subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], cwd=BASE_DIR,
                       env=self.env(), check=True, user=user,
                       group=user and pwd.getpwnam(user).pw_gid)

    # -- processes ---------------------------------------------------------

    def prepare(self):
        """Create the data dir (owned by the web user) and migrate the database."""
        (self.data_dir / "static").mkdir(parents=True, exist_ok=True)  # STATIC_ROOT
        if self.web_user:
            account = pwd.getpwnam(self.web_user)
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)
        self.manage("migrate", "--no-input", "-v", "0", user=self.web_user)

    def start_redis(self, port=None):
        """Start a private redis-server (unix socket unless ``port``); set redis_url."""
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        sock = redis_dir / "redis.sock"
        argv = [shutil.which("redis-server") or "redis-server", "--dir", str(redis_dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no"]
        if port:
            argv += ["--bind", "127.0.0.1", "--port", str(port)]
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        else:
            argv += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "777"]
            self.redis_url = f"redis+socket://{sock}"
        self._spawn("redis", argv)
        wait_until(lambda: _redis_ping(self.redis_url), 15, "redis-server did not come up")

    def start_node_worker(self, concurrency=2):
        """The root worker of this node: consumes node.<name> and drives the engine."""
        return self._spawn(
            "node-worker",
            [sys.executable, "-m", "celery", "-A", "hosting", "worker", "-Q",
             f"node.{self.node_name}", "-n", f"node.{self.node_name}@%h", "-c", str(concurrency),
             "--without-gossip", "--without-mingle", "-l", "INFO"],
            HOSTING_NODE_NAME=self.node_name)

    def start_housekeeping(self):
        """Unprivileged worker for the 'hosting' queue, with Celery beat embedded."""
        return self._spawn(
            "housekeeping",
            [sys.executable, "-m", "celery", "-A", "hosting", "worker", "-Q", "hosting",
             "-n", "housekeeping@%h", "-c", "1", "-B", "-s",
             str(self.data_dir / "celerybeat-schedule"), "--without-gossip",
             "--without-mingle", "-l", "INFO"],
            user=self.web_user)

    def start_web(self):
        proc = self._spawn(
            "web", [sys.executable, "-m", "gunicorn", "hosting.wsgi:application", "--bind",
                    f"127.0.0.1:{self.web_port}", "--workers", "2", "--threads", "4",
                    "--access-logfile", "-"], user=self.web_user)
        wait_until(lambda: _http_up(self.web_port), 30, "the web server did not come up")
        return proc

    def wait_for_node(self, timeout=60):
        """Wait until the node worker has registered its node as online."""
        import django
        django.setup()
        from hosting.nodes.models import Node
        wait_until(lambda: Node.objects.filter(name=self.node_name, state="online").exists(),
                   timeout, f"node {self.node_name} did not come online (see node-worker.log)")

    def kill(self, name):
        """SIGKILL a process and everything in its session (a crash, not a stop)."""
        proc = self.processes.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self):
        """Stop everything: web first, Redis last."""
        for name in ("web", "housekeeping", "node-worker", "redis"):
            proc = self.processes.pop(name, None)
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


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
    return redis.Redis.from_url(url.replace("redis+socket://", "unix://")).ping()


def _http_up(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True

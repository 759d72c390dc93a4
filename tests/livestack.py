"""The whole product running for real, for end-to-end tests.

``LiveStack`` starts what ``make run`` starts (a private redis-server on a
unix socket, the node's root Celery workers, the housekeeping worker with
beat, gunicorn and the consoles' ASGI server as the unprivileged user) on a
throwaway data dir, VE_ROOT and cgroup subtree, seeds the demo data, and removes
everything afterwards.
Tests talk to it over HTTP like a browser or a billing system would.
``LiveStack(..., nodes=2, dc=True)`` runs two nodes joined by a data-centre
segment, as ``make run NODES=2`` does (node 2's VE_ROOT is under the data dir).
"""

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from hosting.stack import UNPRIVILEGED, Stack

ROOT_DIR = Path(__file__).resolve().parents[1]
NODE = "testnode"
GATEWAYS = ("198.18.0.1/32", "fd00:1::1/128")  # of seed_demo's pools, on the node netns
_serial = itertools.count()  # several stacks in one test run get their own namespaces


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


class Api:
    """A JSON client for /api/v1/ with token auth."""

    def __init__(self, base, token=None, password=None):
        self.base, self.token = base, token
        self.password = password  # for the steps that ask for it again (terminate)

    def call(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Token {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace")) from None

    def get(self, path):
        return self.call("GET", path)[1]

    def post(self, path, body=None, expect=202, **kw):
        if body is None and path.endswith("/terminate/") and self.password:
            body = {"current_password": self.password}  # terminate asks for it again
        status, data = self.call("POST", path, body if body is not None else {}, **kw)
        assert status == expect, (status, data)
        return data

    def patch(self, path, body):
        return self.call("PATCH", path, body)[1]

    def login(self, username, password, otp_code=None):
        body = {"username": username, "password": password}
        if otp_code:
            body["otp_code"] = otp_code
        status, data = self.call("POST", "/api/v1/auth/token/", body)
        return Api(self.base, data["token"], password)

    def wait_operation(self, op, timeout=90):
        """Poll an operation until it is final; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.get(f"/api/v1/operations/{op['id']}/")
            if current["state"] in ("succeeded", "failed"):
                return current
            time.sleep(0.3)
        raise AssertionError(f"operation {op['id']} ({op['kind']}) not final after {timeout}s: "
                             f"{current}")


class LiveStack:
    def __init__(self, cgroup_top, ops_concurrency=2, nodes=1, dc=False):
        self.ops_concurrency = ops_concurrency
        self.data_dir = Path(tempfile.mkdtemp(prefix="hosting-e2e-", dir="/tmp"))
        self.ve_root = Path(tempfile.mkdtemp(prefix="hosting-e2e-ve-", dir="/tmp"))
        self.cgroup_top = cgroup_top
        self.cgroup_parent = f"{cgroup_top}/ve"
        self.port = free_port()
        self.asgi_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.netns = f"hosting-e2e-{os.getpid()}-{next(_serial)}"
        self.supervisor, self._stop_supervisor, self.events = None, None, []
        self._apis, self._totp_used = {}, {}
        self.stack = Stack(self.data_dir, node_name=NODE, web_port=self.port,
                           asgi_port=self.asgi_port,
                           web_user=UNPRIVILEGED, log_dir=self.data_dir / "log",
                           node_netns=self.netns, nodes=nodes,
                           dc_netns=f"{self.netns}-dc" if dc else None, extra_env={
                               "VE_ROOT": str(self.ve_root),
                               "VE_CGROUP_PARENT": self.cgroup_parent,
                               "HOSTING_NODE_RUN_DIR": str(self.data_dir / "node-run"),
                               "HOSTING_HEARTBEAT_SECONDS": "2",
                               "HOSTING_SAMPLE_SECONDS": "2",  # graphs get points at once
                               "HOSTING_LOG_LEVEL": "INFO"})

    def start(self):
        self.stack.prepare()
        self.stack.prepare_node_netns(GATEWAYS)
        self.stack.manage("seed_demo", *(arg for node in self.stack.nodes
                                         for arg in ("--node", node.name)))
        # Staff sign in with a second factor: the demo admin's key, for totp_code().
        self.stack.manage("two_factor", "admin", "--enrol", "--key-file",
                          str(self.data_dir / "admin-totp"))
        self.redis_port = free_port()  # on 127.0.0.1, as `make run` does
        self.stack.start_redis(port=self.redis_port)
        self.stack.start_nodes(concurrency=self.ops_concurrency)
        self.stack.start_housekeeping()
        self.stack.start_web()
        self.stack.start_asgi()
        self.wait_node_online()

    def send_task(self, task, args, queue, role="web"):
        """Publish ``task(*args)`` to ``queue`` as the web side (or ``role``) does: with
        its Redis login, signed with its key. Returns the message's id."""
        script = ("import sys, json, django; django.setup()\n"
                  "from hosting.celery import app\n"
                  "with app.connection_for_write() as conn:\n"
                  "    print(app.send_task(sys.argv[1], args=json.loads(sys.argv[2]),"
                  " queue=sys.argv[3], connection=conn).id)\n")
        out = subprocess.run([sys.executable, "-c", script, task, json.dumps(args), queue],
                             env=self.stack.env(role), capture_output=True, text=True,
                             timeout=60, cwd=ROOT_DIR)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[-1]

    def credentials(self):
        text = (self.data_dir / "demo-credentials").read_text()
        return dict(line.split(" ", 1) for line in text.splitlines())

    def api(self, username=None):
        api = Api(self.base)
        if not username:
            return api
        if username not in self._apis:  # one key per login: codes are used up
            self._apis[username] = api.login(username, self.credentials()[username],
                                             self.totp_code(username))
        return self._apis[username]

    def totp_code(self, username):
        """A code of ``username``'s authenticator not used yet (None: it has none).

        A code works once; a second sign-in within the same 30 s takes the next one
        (the server accepts one step ahead), a third waits for the next step."""
        path = self.data_dir / f"{username}-totp"
        if not path.exists():
            return None
        from tests.staffing import totp
        step = int(time.time() // 30)
        wanted = max(step, self._totp_used.get(username, -1) + 1)
        if wanted > step + 1:
            time.sleep((wanted - 1) * 30 - time.time() + 0.5)
        self._totp_used[username] = wanted
        return totp(path.read_text().strip(), at=wanted * 30 + 1)

    def wait_node_online(self, timeout=60):
        """Wait until every node of the stack is online."""
        staff = self.api("admin")
        wanted = {node.name for node in self.stack.nodes}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = staff.get("/api/v1/nodes/?state=online")["results"]
            if wanted <= {n["name"] for n in nodes}:
                return
            time.sleep(0.3)
        raise AssertionError(f"nodes {sorted(wanted)} not all online; logs:\n{self.logs()}")

    def restart_node_worker(self):
        self.stack.start_node_worker()

    def kill_node_worker(self):
        self.stack.kill("node-worker")

    # -- outages (the supervisor, if running, restarts what crashed) ---------

    def supervise(self, **options):
        """Restart crashed processes as ``manage.py runstack`` does; returns the
        Supervisor (stopped by ``stop``)."""
        from hosting.supervisor import Supervisor
        self.supervisor = Supervisor(self.stack, log=self._note, **options)
        self._stop_supervisor = self.supervisor.start()
        return self.supervisor

    def _note(self, message):
        self.events.append((time.monotonic(), message))
        print(f"supervisor: {message}", file=sys.stderr)

    def crash(self, name):
        """kill -9 the main process of ``name`` (left for the supervisor to notice)."""
        os.kill(self.stack.processes[name].pid, signal.SIGKILL)

    def pid(self, name):
        return self.stack.processes[name].pid

    def web_workers(self):
        """PIDs of gunicorn's worker processes (children of its master)."""
        master = self.pid("web")
        return [int(p) for p in Path(f"/proc/{master}/task/{master}/children")
                .read_text().split()]

    def freeze_redis(self):
        os.kill(self.pid("redis"), signal.SIGSTOP)

    def thaw_redis(self):
        os.kill(self.pid("redis"), signal.SIGCONT)

    def vectl(self, *args):
        """vectl as the node runs it: inside the node's network namespace."""
        env = dict(os.environ, VE_ROOT=str(self.ve_root), VE_CGROUP_PARENT=self.cgroup_parent,
                   PYTHONPATH=str(ROOT_DIR))
        return self.in_node_netns(sys.executable, "-m", "ve.cli", *map(str, args), env=env)

    def in_node_netns(self, *argv, **kwargs):
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", *argv],
                              capture_output=True, text=True, timeout=60, **kwargs)

    def vectl_json(self, *args):
        out = self.vectl(*args, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def engine(self, node=None):
        """The engine of node 1 (or of ``node``, a StackNode of this stack)."""
        from ve import Engine
        if node is None:
            return Engine(root=str(self.ve_root), cgroup_parent=self.cgroup_parent)
        return Engine(root=node.effective("VE_ROOT"),
                      cgroup_parent=node.effective("VE_CGROUP_PARENT"))

    def logs(self, name=None):
        names = [name] if name else ["node-worker", "housekeeping", "web", "asgi", "node-console"]
        return "\n".join(f"== {n}\n" + (self.data_dir / "log" / f"{n}.log").read_text()[-4000:]
                         for n in names if (self.data_dir / "log" / f"{n}.log").exists())

    def stop(self):
        if self._stop_supervisor:
            self._stop_supervisor.set()
            time.sleep(0.5)  # its last check is over
        self.stack.stop()  # the watcher's twin carries on while VEs run
        for node in self.stack.nodes:
            engine = self.engine(node)
            for veid in engine.layout.veids():
                try:
                    engine.destroy(veid, timeout=2)
                except Exception as exc:
                    print(f"cleanup of VE {veid} on {node.name} failed: {exc}",
                          file=sys.stderr)
            self.stack.stop_node_watcher(node=node)
        from tests.engine.conftest import CGROUP_ROOT, _remove_cgroup_tree
        parents = [node.effective("VE_CGROUP_PARENT") for node in self.stack.nodes]
        leaked = [str(h / parent) for h in CGROUP_ROOT.iterdir() for parent in parents
                  if any((h / parent).glob("[0-9]*"))]
        _remove_cgroup_tree(self.cgroup_top)
        self.stack.remove_node_netns()
        if os.environ.get("HOSTING_E2E_KEEP_LOGS"):  # for debugging: logs stay in the data dir
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.ve_root)])
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.data_dir),
                            str(self.ve_root)])
        assert not leaked, f"VE cgroups left after destroying every VE: {leaked}"


def new_cgroup_top():
    # Not "vetest-": the engine tests' leak check runs before this stack stops.
    return f"vestack-{os.getpid()}-{uuid.uuid4().hex[:8]}"

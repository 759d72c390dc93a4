"""Run the whole product in the foreground (``make run``): Ctrl-C stops it all.

A process that dies is restarted (``hosting.supervisor``: after 1 s, then
with back-off up to 30 s), so the portal and API keep serving.

``--nodes N`` (``make run NODES=N``) runs N nodes on this machine, each in a
network namespace of its own, all joined by the data-centre segment in
namespace ``hosting-dc`` (``hosting.datacentre``); node 1 is this host's, as
with one node (``hosting.stacknode`` names the others and their directories).
"""

import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hosting import datacentre
from hosting.stack import UNPRIVILEGED, Stack, can_read_checkout, port_taken
from hosting.supervisor import Supervisor

DEMO_GATEWAYS = ("198.18.0.1/32", "fd00:1::1/128")  # the demo pools' gateways (seed_demo)
DC_NETNS = "hosting-dc"


class Command(BaseCommand):
    help = "Start Redis, the root node workers, housekeeping + beat and the web server."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--asgi-port", type=int, default=8001,
                            help="the ASGI server's port (the web consoles' WebSockets)")
        parser.add_argument("--redis-port", type=int, default=6379)
        parser.add_argument("--nodes", type=int, default=1,
                            help="how many nodes to run on this machine (default 1)")

    def handle(self, *args, port, asgi_port, redis_port, nodes, **options):
        if not can_read_checkout(UNPRIVILEGED):
            raise CommandError(f"user {UNPRIVILEGED} cannot read this checkout; the web "
                               "process runs as that user (move the checkout or fix permissions)")
        if not 1 <= nodes <= 20:
            raise CommandError("--nodes: between 1 and 20 (each node is five root processes)")
        if port_taken(asgi_port):
            raise CommandError(f"port {asgi_port} (the consoles' ASGI server) is taken: "
                               "give another with --asgi-port")
        stack = Stack(settings.DATA_DIR, web_port=port, nodes=nodes, dc_netns=DC_NETNS,
                      asgi_port=asgi_port)
        stack.node_netns = f"hosting-{stack.node_name}"[:60]
        if DC_NETNS in {node.netns for node in stack.nodes}:
            raise CommandError(f"this host's name makes node 1's network namespace "
                               f"{DC_NETNS}, the data centre's: rename the host")
        stack.prepare()
        # The demo nodes' VEs live in their own network namespaces: their
        # 198.18.0.0/15 and fd00::/8 traffic cannot leave the machine.
        stack.prepare_node_netns(DEMO_GATEWAYS)
        stack.manage("seed_demo", *(arg for node in stack.nodes for arg in ("--node", node.name)),
                     "-v", "0")
        taken = port_taken(redis_port)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            # Our own Redis on a unix socket (the node worker's network namespace
            # cannot reach 127.0.0.1 of this one, nor can any VE); TCP on 127.0.0.1
            # too if the port is free. Logins and signing keys are made at first
            # run in <data dir>/secrets/ (docs/security.md).
            stack.start_redis(port=None if taken else redis_port)
            stack.start_nodes()
            stack.start_housekeeping()
            stack.start_web()
            stack.start_asgi()
            stack.wait_for_node()
            self._banner(stack)
            supervisor = Supervisor(stack, log=self._log)
            while True:
                time.sleep(0.5)
                try:
                    supervisor.check()
                except Exception as exc:  # a failed restart is tried again, later
                    self._log(f"restart failed: {exc}")
        except KeyboardInterrupt:
            self.stdout.write("stopping...")
        finally:
            stack.stop()
            for node in stack.nodes:
                pid = stack.node_watcher_pid(node)
                if pid:  # VPSes still run: their seccomp listeners must stay open
                    self.stdout.write(
                        f"the node watcher of {node.name} (PID {pid}) keeps serving its running "
                        f"VPSes; `VE_ROOT={node.effective('VE_ROOT')} vectl watch --stop` "
                        "stops it")

    def _log(self, message):
        self.stdout.write(f"{time.strftime('%H:%M:%S')} {message}")
        self.stdout.flush()

    def _banner(self, stack):
        creds = dict(line.split(" ", 1) for line in
                     (settings.DATA_DIR / "demo-credentials").read_text().splitlines())
        url = f"http://127.0.0.1:{stack.web_port}/"
        self.stdout.write(self.style.SUCCESS(f"""
Hosting is running at {url}
  staff:    admin / {creds['admin']}   ({url}staff/ and {url}admin/)
  customer: demo / {creds['demo']}
  API docs: {url}api/v1/docs/
  consoles: WebSockets on ws://127.0.0.1{stack.console_url}/ws/console/ (uvicorn)
{self._nodes(stack)}
  logs:     {stack.log_dir}
  data centre: namespace {stack.dc_netns}, bridge {datacentre.BRIDGE} \
{datacentre.ROUTER}/{datacentre.PREFIX}
      (a VPS at any node: ip netns exec {stack.dc_netns} busybox ping 198.18.0.10)
Press Ctrl-C to stop.
"""))

    @staticmethod
    def _nodes(stack):
        """Two lines a node: its queues and where it keeps and wires its VEs."""
        return "\n".join(
            f"  node {node.name}: queues {node.queue}, {node.chores_queue}, "
            f"{node.console_queue}\n"
            f"      VE_ROOT {node.effective('VE_ROOT')}, cgroup parent "
            f"{node.effective('VE_CGROUP_PARENT')}, namespace {node.netns}, "
            f"migration sshd {node.migrate_address}" for node in stack.nodes)

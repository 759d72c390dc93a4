"""Run the whole product in the foreground (``make run``): Ctrl-C stops it all.

A process that dies is restarted (``hosting.supervisor``: after 1 s, then
with back-off up to 30 s), so the portal and API keep serving.
"""

import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hosting.stack import UNPRIVILEGED, Stack, can_read_checkout, port_taken
from hosting.supervisor import Supervisor

DEMO_GATEWAYS = ("198.18.0.1/32", "fd00:1::1/128")  # the demo pools' gateways (seed_demo)


class Command(BaseCommand):
    help = "Start Redis, the root node worker, housekeeping + beat and the web server."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--redis-port", type=int, default=6379)

    def handle(self, *args, port, redis_port, **options):
        if not can_read_checkout(UNPRIVILEGED):
            raise CommandError(f"user {UNPRIVILEGED} cannot read this checkout; the web "
                               "process runs as that user (move the checkout or fix permissions)")
        stack = Stack(settings.DATA_DIR, web_port=port)
        stack.node_netns = f"hosting-{stack.node_name}"[:60]
        stack.prepare()
        # The demo node's VEs live in their own network namespace: their
        # 198.18.0.0/15 and fd00::/8 traffic cannot leave the machine.
        stack.prepare_node_netns(DEMO_GATEWAYS)
        stack.manage("seed_demo", "--node", stack.node_name, "-v", "0")
        taken = port_taken(redis_port)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            # Our own Redis on a unix socket (the node worker's network namespace
            # cannot reach 127.0.0.1 of this one, nor can any VE); TCP on 127.0.0.1
            # too if the port is free. Logins and signing keys are made at first
            # run in <data dir>/secrets/ (docs/security.md).
            stack.start_redis(port=None if taken else redis_port)
            stack.start_node_watcher()
            stack.start_node_worker()
            stack.start_node_chores()
            stack.start_housekeeping()
            stack.start_web()
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
            pid = stack.node_watcher_pid()
            if pid:  # VPSes still run: their seccomp listeners must stay open
                self.stdout.write(f"the node watcher (PID {pid}) keeps serving the running "
                                  "VPSes; `vectl watch --stop` stops it")

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
  node:     {stack.node_name} (queues node.{stack.node_name}, node.{stack.node_name}.chores)
  logs:     {stack.log_dir}
  VE network: namespace {stack.node_netns} (try: ip netns exec {stack.node_netns} ping 198.18.0.10)
Press Ctrl-C to stop.
"""))

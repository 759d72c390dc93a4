"""Stand-in node workers for the load test: queued operations finish, nodes stay online.

The dashboard is what is measured, so no engine runs: each queued operation is
marked running and, ``engine_seconds`` later, succeeded with its VPS in the state
it asked for, as a node worker would record it (one operation per VPS at a time,
as the real ones). Nodes' heartbeats stay fresh. Runs in a thread of run.py.
"""

import threading
import time
from datetime import timedelta


class StandInNodes(threading.Thread):
    """Finish operations ``engine_seconds`` after they were queued; stop with ``stop()``."""

    def __init__(self, engine_seconds=1.0, poll_seconds=0.2):
        super().__init__(name="stand-in nodes", daemon=True)
        self.engine_seconds, self.poll_seconds = engine_seconds, poll_seconds
        self.finished = 0
        self._stopping = threading.Event()

    def stop(self):
        self._stopping.set()
        self.join(10)

    def run(self):
        from django.db import connection
        try:
            beat = 0.0
            while not self._stopping.wait(self.poll_seconds):
                if time.monotonic() - beat > 10:
                    self._heartbeat()
                    beat = time.monotonic()
                self.finished += self._finish_due()
        finally:
            connection.close()

    def _heartbeat(self):
        from django.utils import timezone

        from hosting.nodes.models import Node
        Node.objects.update(last_heartbeat=timezone.now(), state=Node.State.ONLINE)

    def _finish_due(self):
        from django.db import transaction
        from django.utils import timezone

        from hosting.environments.models import VirtualEnvironment as VE
        from hosting.operations.models import Operation
        due = timezone.now() - timedelta(seconds=self.engine_seconds)
        done = 0
        for op in Operation.objects.filter(state=Operation.State.QUEUED, created__lte=due) \
                .select_related("environment")[:200]:
            now = timezone.now()
            with transaction.atomic():
                Operation.objects.filter(pk=op.pk).update(
                    state=Operation.State.SUCCEEDED, progress=100, attempts=1, message="done",
                    started=op.created, finished=now)
                if op.environment is not None:
                    VE.objects.filter(pk=op.environment_id).update(
                        actual_state=op.environment.desired_state)
            done += 1
        return done

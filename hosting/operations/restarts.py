"""Bringing back VPSes that should run but stopped unexpectedly, without looping forever.

Reconcile asks ``decide`` for every VE whose desired state is running but
that the node finds stopped (it crashed, its node lost it, or it stopped
while nobody watched). The first restart is at once; each further one
waits twice as long as the one before (BACKOFF, 2 x BACKOFF, ...). A VE
that needed MAX_RESTARTS restarts within WINDOW of each other is in a crash
loop: it is left stopped and flagged to staff until someone starts it.

After the node itself rebooted, its VEs are started in ``boot_order``
without counting as restarts.
"""

from datetime import timedelta

from hosting.environments.models import VirtualEnvironment as VE

MAX_RESTARTS = 5
BACKOFF = timedelta(seconds=30)
WINDOW = timedelta(minutes=30)

START, WAIT, CRASH_LOOP = "start", "wait", "crash-loop"


def decide(ve, now):
    """START (recorded as a restart), WAIT (back-off) or CRASH_LOOP (just flagged) for ``ve``."""
    if ve.crash_loop:
        return CRASH_LOOP
    restarts = ve.restarts
    if ve.last_restart is not None and now - ve.last_restart > WINDOW:
        restarts = 0  # it ran long enough since: a fresh start of the count
    if restarts >= MAX_RESTARTS:
        VE.objects.filter(pk=ve.pk).update(crash_loop=True)
        return CRASH_LOOP
    if restarts and now - ve.last_restart < BACKOFF * 2 ** (restarts - 1):
        return WAIT
    VE.objects.filter(pk=ve.pk).update(restarts=restarts + 1, last_restart=now)
    return START


def forgive(ve):
    """Someone started the VE on purpose: its restart count and crash-loop flag go."""
    VE.objects.filter(pk=ve.pk).update(restarts=0, crash_loop=False, last_restart=None)


def boot_order(ves):
    """``ves`` in the order a rebooted node starts them: one VPS per customer in turn
    (each customer's by VEID), so no customer's fleet goes first by accident."""
    queues = {}
    for ve in sorted(ves, key=lambda v: v.veid):
        queues.setdefault(ve.owner_id, []).append(ve)
    ordered, rounds = [], list(queues.values())
    while rounds:
        ordered += [queue.pop(0) for queue in rounds]
        rounds = [queue for queue in rounds if queue]
    return ordered

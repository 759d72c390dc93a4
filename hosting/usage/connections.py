"""A VE's tracked connections now: what its page and usage API show next to its cap.

The node's samples carry them (``conntrack``, ``conntrack_refused``) for
routed VEs whose plan caps connections; the latest raw sample is "now".
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import UsageSample

STALE_SAMPLES = 5  # older than this many sampling periods: not "now" any more


def current(ve, now=None):
    """{"held", "refused", "limit", "time"} of ``ve``: connections held in its node's
    conntrack table, new ones its cap refused since it was set on that node (None
    when not measured: stopped, no cap, no recent sample), its plan's cap (None =
    none)."""
    now = now or timezone.now()
    since = now - timedelta(seconds=STALE_SAMPLES * settings.NODE_SAMPLE_SECONDS)
    row = (UsageSample.objects.filter(environment=ve, time__gte=since)
           .order_by("-time").values("time", "conntrack", "conntrack_refused").first())
    row = row or {"time": None, "conntrack": None, "conntrack_refused": None}
    return {"held": row["conntrack"], "refused": row["conntrack_refused"],
            "limit": ve.plan.connections or None,
            "time": row["time"].timestamp() if row["time"] else None}

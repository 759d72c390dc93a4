"""Period figures kept in the database, so a report reads them instead of a month of rollups.

A figure of a usage Period (period.py: each VE's hours and percentiles, each
node's hourly sums, ...) costs a pass over every hourly rollup of the period:
7.2 million rows for 10,000 VEs over 30 days. Hourly housekeeping computes
them once new rollups are in (``refresh``) and stores each under its Period's
data version. A Period reads the figure of its exact version; when there is
none yet (a VE was moved or destroyed since the last run), the newest stored one
stands in and housekeeping is asked to store the current one (``ask_for``), so
a web request never spends a month of rollups on it. Only with nothing stored
within KEEP does the reader compute (then store) the figure itself.

Values are plain data: dicts with int keys, tuples, lists, floats, datetimes.
JSON keeps none of the first two or the last, so each is tagged on the way in
and restored on the way out (a value read back equals the value stored).
"""

import json
import logging
from datetime import datetime, timedelta

from django.utils import timezone

from .models import PeriodFigure

KEEP = timedelta(hours=3)  # a version is current for an hour at most (period.py)
ASKED_SECONDS = 300  # at most one extra run per rollup interval
STORE_TASK = "hosting.usage.tasks.store_figures"
log = logging.getLogger(__name__)
_DICT, _TUPLE, _TIME = "d", "t", "T"


def load(days, name, version):
    """The figure ``name`` of the ``days`` Period stored for ``version``, or None."""
    text = PeriodFigure.objects.filter(days=days, name=name, version=version) \
        .values_list("value", flat=True).first()
    return None if text is None else decode(text)


def newest(days, name, now=None, keep=KEEP):
    """The figure ``name`` of the ``days`` Period stored last for any version within
    ``keep``, or None: what stands in while housekeeping stores the current one."""
    text = PeriodFigure.objects.filter(
        days=days, name=name, computed_at__gte=(now or timezone.now()) - keep) \
        .order_by("-computed_at").values_list("value", flat=True).first()
    return None if text is None else decode(text)


def ask_for(version):
    """Have housekeeping store the figures of ``version`` soon. Once per ASKED_SECONDS
    whatever the version: moves and terminations change it at any time, and
    each run costs a pass over the rollups. (The rollup run every 5 minutes stores
    them anyway; a broker that is down only leaves it to that.)"""
    from django.core.cache import cache

    from hosting.operations.dispatch import publish
    if not cache.add("usage-figures-asked", version, ASKED_SECONDS):
        return
    try:
        publish(STORE_TASK, [], "hosting")
    except Exception as exc:  # kombu raises many types for "no broker"
        log.warning("period figures of %s not asked for: %s", version, exc)


def has(days, name, version):
    """Whether the figure is stored for ``version`` (without reading it)."""
    return PeriodFigure.objects.filter(days=days, name=name, version=version).exists()


def save(days, name, version, value):
    """Store ``value`` for ``version``; a copy another process stored meanwhile stays."""
    PeriodFigure.objects.bulk_create(
        [PeriodFigure(days=days, name=name, version=version, computed_at=timezone.now(),
                      value=encode(value))], ignore_conflicts=True)


def replace(days, name, version, value):
    """Store ``value`` for ``version`` and drop the figure's other versions: for a figure
    stored every rollup run (a node's graph, graphs.py), only the newest stands in."""
    save(days, name, version, value)
    PeriodFigure.objects.filter(days=days, name=name).exclude(version=version).delete()


def prune(now=None):
    """Delete figures stored more than KEEP ago (their versions are past); return how many."""
    return PeriodFigure.objects.filter(
        computed_at__lt=(now or timezone.now()) - KEEP).delete()[0]


def encode(value):
    """``value`` as JSON text, its dicts, tuples and datetimes tagged."""
    return json.dumps(_tag(value), separators=(",", ":"))


def decode(text):
    """The value ``encode`` was given."""
    return json.loads(text, object_hook=_untag)


def _tag(value):
    if isinstance(value, dict):
        return {_DICT: [[_tag(k), _tag(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, datetime):
        return {_TIME: value.isoformat()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a period figure cannot hold {type(value).__name__}")


def _untag(obj):
    # Every dict was tagged, so each object here is one tag (inner ones come first).
    (tag, content), = obj.items()
    if tag == _DICT:
        return {k: v for k, v in content}
    if tag == _TUPLE:
        return tuple(content)
    return datetime.fromisoformat(content)

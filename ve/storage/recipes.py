"""The OS templates the engine builds itself (``vectl template build NAME``).

Each recipe writes the template into the cache through ``templates`` like an
import; this module only picks the recipe, so the recipes may use
``templates`` without it using them back.
"""

from ..errors import NotFound
from . import templates

BUILDABLE = ("busybox", "debian-12", "debian-13")


def build(cache_dir, name):
    """Build template ``name`` (one of BUILDABLE) into ``cache_dir``; return its path."""
    if name == "busybox":
        return templates.build_busybox(cache_dir)
    if name in ("debian-12", "debian-13"):
        from .debian import build_debian
        return build_debian(cache_dir, name)
    raise NotFound(f"no recipe to build template {name!r} (known: {', '.join(BUILDABLE)})")

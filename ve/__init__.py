"""ve: an OpenVZ-style container engine on Linux namespaces and cgroups.

The public surface is ``Engine`` (one method per verb), the spec records
``VEConfig`` and ``Limits``, and the typed errors. Nothing here imports
Django or Celery; ``vectl`` (``ve.cli``) is a thin shell over ``Engine``.
"""

from .config import Limits, VEConfig
from .errors import (AlreadyExists, InvalidConfig, NotFound, ResourceError,
                     StateError, Unsupported, VEError)


def __getattr__(name):
    # Imported lazily so `import ve.validate` (the dashboard's forms) stays cheap.
    if name == "Engine":
        from .engine import Engine
        return Engine
    raise AttributeError(name)


__all__ = ["Engine", "VEConfig", "Limits", "VEError", "InvalidConfig", "NotFound",
           "AlreadyExists", "StateError", "ResourceError", "Unsupported"]

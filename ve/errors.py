"""Typed engine errors.

Every error carries a stable ``code`` (a short string) and ``exit_status`` (the
``vectl`` exit code). Callers branch on the type or the code, never on the
message text.
"""

import contextlib


class VEError(Exception):
    """Base class of every error the engine raises on purpose."""

    code = "error"
    exit_status = 1

    def __init__(self, message, veid=None):
        super().__init__(message)
        self.message = message
        self.veid = veid

    def __str__(self):
        if self.veid is None:
            return self.message
        return f"VE {self.veid}: {self.message}"

    def as_dict(self):
        """Return a JSON-friendly description (used by ``vectl --json``)."""
        return {"error": self.code, "message": self.message, "veid": self.veid}


class InvalidConfig(VEError):
    """Input that does not parse or violates a rule (bad VEID, hostname, limit)."""

    code = "invalid"
    exit_status = 2


class NotFound(VEError):
    """The VE or template does not exist."""

    code = "not-found"
    exit_status = 3


class AlreadyExists(VEError):
    """A VE with this VEID exists with a different configuration."""

    code = "exists"
    exit_status = 4


class StateError(VEError):
    """The verb does not apply in the VE's current state (or the VE is busy)."""

    code = "state"
    exit_status = 5


class NeedsStop(StateError):
    """The change can be made only while the VE is stopped (a shrink, say)."""


class ResourceError(VEError):
    """The host could not provide something (cgroup, mount, process, file)."""

    code = "resource"
    exit_status = 6


class Unsupported(VEError):
    """The host lacks a feature the verb needs; the message says which."""

    code = "unsupported"
    exit_status = 7


@contextlib.contextmanager
def host_errors(veid, what):
    """Turn an OSError of the host into a ResourceError saying ``what`` failed."""
    try:
        yield
    except OSError as exc:
        raise ResourceError(f"{what}: {exc}", veid) from exc

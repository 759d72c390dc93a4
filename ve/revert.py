"""Undo the completed steps of a multi-step verb when a later step fails."""

from .log import get as get_logger

log = get_logger(__name__)


class Reverter:
    """Collect undo callbacks; run them newest first unless ``commit()`` was called.

    Use as a context manager around the steps of one verb (after Incus's
    reverter): register the undo right after each step succeeds.
    """

    def __init__(self):
        self._undo = []

    def add(self, func, *args):
        self._undo.append((func, args))

    def commit(self):
        self._undo.clear()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        while self._undo:
            func, args = self._undo.pop()
            try:
                func(*args)
            except Exception:  # an undo must not hide the original error
                log.exception("undo step %s failed", getattr(func, "__name__", func))
        return False

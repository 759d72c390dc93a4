"""Loggers that import ``logging`` only when something is logged.

``import logging`` costs ~8 ms, a fifth of a ``vectl start``; most calls log
nothing. ``get(__name__)`` returns a stand-in that forwards to the real
``logging.getLogger(name)`` on first use, so library modules still log
through the standard machinery (handlers are the application's business).
"""


import sys


def _ignore(*args, **kwargs):
    """Stand-in for a log call nobody can receive."""


class _LazyLogger:
    __slots__ = ("_name", "_logger")

    def __init__(self, name):
        self._name = name
        self._logger = None

    def __getattr__(self, attr):
        if attr in ("debug", "info") and "logging" not in sys.modules:
            # Nobody imported logging, so nobody configured a handler that
            # would show debug or info records: drop them without the import.
            return _ignore
        if self._logger is None:
            import logging
            self._logger = logging.getLogger(self._name)
        return getattr(self._logger, attr)


def get(name):
    """Return a logger for ``name`` that loads ``logging`` on first use."""
    return _LazyLogger(name)

"""Moving VEs between nodes: each node's SSH identity and migration sshd
(``identity``), the receiving end (``receive``); the sending end is the
Engine's ``migrate`` (ve/engine/migration.py)."""


def warm_imports():
    """Import what stopping and bringing up a VE's network needs before a VE is
    frozen, not while it is: the source calls it before the freeze, the target when
    a session begins."""
    from ..net import links  # noqa: F401

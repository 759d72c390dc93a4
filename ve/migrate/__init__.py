"""Moving VEs between nodes: each node's SSH identity and migration sshd
(``identity``), the receiving end (``receive``); the sending end is the
Engine's ``migrate`` (ve/engine/migration.py)."""

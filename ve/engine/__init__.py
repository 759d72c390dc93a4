"""The Engine: one node's VEs (one VE_ROOT, one cgroup parent), one method per verb.

The class is assembled from one module per concern, each a mixin that reads
the others' helpers through ``self``:

- ``lifecycle.py``: create, start, stop, restart, destroy, set, and the per-VE
  lock; the class ``Engine`` itself;
- ``reinstall.py``, ``boot.py``: reinstall; the onboot VEs at node boot;
- ``exits.py``: VEs that ended on their own (``reap``) and the event journal;
- ``query.py``: status, list, pid and the run-file reading every verb uses;
- ``shell.py``: exec and enter; ``inside.py``: the engine's own changes inside a VE;
- ``network.py``, ``disk.py``: the network and disk steps of the verbs;
- ``sampling.py``: one cheap look at every VE's usage;
- ``accounts.py``: a user's password and root's SSH keys inside a VE;
- ``snapshots.py``: disk snapshots (take, list, roll back, delete);
- ``backups.py``: backups into the node's restic repository, and restores;
- ``timeouts.py``: how long verbs wait.
"""

from .lifecycle import Engine

__all__ = ["Engine"]

"""The Engine: one node's VEs (one VE_ROOT, one cgroup parent), one method per verb.

The class is assembled from one module per concern, each a mixin that reads
the others' helpers through ``self``:

- ``lifecycle.py``: create, start, stop, restart, destroy, reinstall, set, and the
  per-VE lock; the class ``Engine`` itself;
- ``query.py``: status, list, pid and the run-file reading every verb uses;
- ``shell.py``: exec and enter;
- ``network.py``, ``disk.py``: the network and disk steps of the verbs;
- ``sampling.py``: one cheap look at every VE's usage;
- ``accounts.py``: root password and SSH keys inside a VE.
"""

from .lifecycle import Engine

__all__ = ["Engine"]

"""Kernel objects a VE makes count against host root too: raise the node's caps,
give each VE its own.

inotify instances and watches are counted per user *and* up the chain of user
namespaces: an instance systemd makes in a VE counts for the VE's root and for
host root, who made the VE's user namespace. Debian's default of 128 instances
per user is what a dozen systemd VEs use up; after that systemd in the next VE
(and criu, and the host's own root services) can watch nothing. So the node's
caps (the initial user namespace's) are raised to what a full node needs, and
each VE gets caps in its own user namespace, so no VE can use up the node's.
"""

import os

# The node's caps, as container hosts set them (Incus's production settings).
NODE_CAPS = {"fs/inotify/max_user_instances": 1 << 20, "fs/inotify/max_user_watches": 1 << 22}
# One VE's, set by its setup process in its user namespace (spawn_init.c, from the
# spec): systemd and its services use a few dozen instances and a few
# thousand watches; a file-syncing service may want many watches.
VE_CAPS = {"user/max_inotify_instances": 1024, "user/max_inotify_watches": 1 << 18}

_raised = False


def raise_node_caps():
    """Raise the node's caps to NODE_CAPS where they are lower (once per process;
    never lowered: an operator's higher setting stays)."""
    global _raised
    if _raised:
        return
    for path, wanted in NODE_CAPS.items():
        full = os.path.join("/proc/sys", path)
        with open(full) as f:
            current = int(f.read())
        if current < wanted:
            with open(full, "w") as f:
                f.write(f"{wanted}\n")
    _raised = True

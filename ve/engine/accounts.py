"""Accounts inside a running VE: a user's password and root's SSH keys.

The files are changed by this code, in the VE's mount namespace as VE root
(``kernel.inside``), never by running a program of the VE: a VE root may have
replaced all of them. Only the crypt(3) hash of a password ever reaches the
node; the clear text stays with whoever hashed it.
"""

import time

from .. import validate
from ..errors import InvalidConfig
from ..kernel import vefiles


class AccountsMixin:
    """Password and SSH key verbs of the Engine (needs ``_inside``)."""

    def set_password_hash(self, veid, user, crypt_hash):
        """Set ``user``'s password in running VE ``veid`` to ``crypt_hash`` (/etc/shadow)."""
        user, crypt_hash = validate.user_name(user), validate.password_hash(crypt_hash)
        found = self._inside(validate.veid(veid), _set_shadow_hash, (user, crypt_hash),
                             f"cannot set the password of {user}")
        if not found:
            raise InvalidConfig(f"the VE has no user {user} in /etc/shadow", veid)

    def add_ssh_key(self, veid, key):
        """Add ``key`` to root's ~/.ssh/authorized_keys in running VE ``veid`` (once)."""
        key = validate.ssh_public_key(key)
        self._inside(validate.veid(veid), _add_authorized_key, (key,),
                     "cannot install the SSH key")


# -- run inside the VE (kernel.inside): only vefiles touches its files ----------


def _set_shadow_hash(user, crypt_hash):
    """Put ``crypt_hash`` in ``user``'s /etc/shadow line; False if there is none."""
    data, info = vefiles.read("/etc/shadow")
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    today = str(int(time.time() // 86400))  # last change: now (0 would force a change)
    found = False
    for number, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == user and len(fields) >= 3:
            fields[1], fields[2] = crypt_hash, today
            lines[number] = ":".join(fields)
            found = True
    if found:
        vefiles.replace("/etc/shadow", "\n".join(lines).encode("utf-8", "surrogateescape"),
                        info.st_mode & 0o7777, (info.st_uid, info.st_gid))
    return found


def _add_authorized_key(key):
    for directory in ("/root", "/root/.ssh"):
        vefiles.make_dir(directory, 0o700)
    path = "/root/.ssh/authorized_keys"
    try:
        data, info = vefiles.read(path)
        mode, owner = info.st_mode & 0o7777, (info.st_uid, info.st_gid)
    except FileNotFoundError:
        data, mode, owner = b"", 0o600, None
    if key.encode() in data.split(b"\n"):
        return
    if data and not data.endswith(b"\n"):
        data += b"\n"
    vefiles.replace(path, data + key.encode() + b"\n", mode, owner)

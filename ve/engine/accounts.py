"""Accounts inside a running VE: root password and SSH keys.

Both work through ``Engine.exec`` with fixed programs: the secret or key goes
in on the command's stdin, never on a command line or through a shell
variable built from user input. Only the crypt(3) hash of a password ever
reaches the node; the clear text stays with whoever hashed it.
"""

from .. import validate
from ..errors import InvalidConfig, ResourceError

# The hash comes in on stdin. awk rewrites the user's shadow line; cat > keeps
# the file's inode, owner and mode. Works with busybox and with Debian's tools.
_SET_HASH = (
    'umask 077; IFS= read -r user; IFS= read -r hash; '
    'awk -F: -v OFS=: -v u="$user" -v h="$hash" \'$1==u{$2=h;f=1}1;END{exit !f}\' '
    '/etc/shadow > /etc/shadow.ve-new && cat /etc/shadow.ve-new > /etc/shadow; '
    'rc=$?; rm -f /etc/shadow.ve-new; exit $rc')

_ADD_KEY = (
    'umask 077; mkdir -p /root/.ssh && touch /root/.ssh/authorized_keys && '
    'IFS= read -r key && (grep -qxF "$key" /root/.ssh/authorized_keys || '
    'printf "%s\\n" "$key" >> /root/.ssh/authorized_keys)')

_HASH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./$")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
              "sk-ecdsa-sha2-nistp256@openssh.com")
_B64_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=")


def password_hash(value):
    """Check a crypt(3) hash such as ``$6$salt$...``; return it."""
    if not isinstance(value, str) or not value.startswith("$") or len(value) > 512 \
            or not set(value) <= _HASH_CHARS or value.count("$") < 3:
        raise InvalidConfig("bad password hash: expected a crypt(3) hash like $6$salt$hash")
    return value


def ssh_public_key(value):
    """Check one OpenSSH public key line (``type base64 [comment]``); return it stripped."""
    text = str(value).strip()
    parts = text.split(None, 2)
    if "\n" in text or "\r" in text or len(parts) < 2 or parts[0] not in _KEY_TYPES \
            or not set(parts[1]) <= _B64_CHARS or len(parts[1]) < 16 or len(text) > 8192:
        raise InvalidConfig("bad SSH key: paste one public key line such as 'ssh-ed25519 AAAA... me@laptop'")
    if len(parts) == 3 and not parts[2].isprintable():
        raise InvalidConfig("bad SSH key: the comment has control characters")
    return text


def set_password_hash(engine, veid, user, crypt_hash):
    """Set ``user``'s password inside running VE ``veid`` to ``crypt_hash``."""
    if not user.isidentifier() and not user.replace("-", "_").isidentifier():
        raise InvalidConfig(f"bad user name {user!r}")
    data = f"{user}\n{password_hash(crypt_hash)}\n".encode()
    result = engine.exec(validate.veid(veid), ["/bin/sh", "-c", _SET_HASH], input=data)
    if result.returncode != 0:
        raise ResourceError(f"cannot set the password of {user} (no such user or no "
                            f"/etc/shadow in the VE): {result.stderr.decode(errors='replace').strip()}",
                            veid)


def add_ssh_key(engine, veid, key):
    """Add ``key`` to root's authorized_keys in running VE ``veid`` (once)."""
    data = (ssh_public_key(key) + "\n").encode()
    result = engine.exec(validate.veid(veid), ["/bin/sh", "-c", _ADD_KEY], input=data)
    if result.returncode != 0:
        raise ResourceError("cannot install the SSH key: "
                            + result.stderr.decode(errors="replace").strip(), veid)

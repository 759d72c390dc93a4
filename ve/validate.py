"""Checks for every value that reaches the engine from outside.

Each function returns the normalised value or raises ``InvalidConfig``. They
touch no file and no process, so the dashboard's forms reuse them.
"""


from .errors import InvalidConfig

# Each VE maps its uids 0-65535 to its own host range starting at VEID * 65536.
# 65534 keeps the last range below 2**32 - 1 (the invalid uid); VEIDs under 100
# are reserved, which keeps the ranges clear of the usual /etc/subuid ranges.
MIN_VEID = 100
MAX_VEID = 65534

# Plain character sets instead of regular expressions, spelled out rather than
# taken from ``string`` (whose Template compiles a regex at import): imports are
# a noticeable share of every vectl call.
_LETTERS_DIGITS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ALNUM = frozenset(_LETTERS_DIGITS)
_LABEL_CHARS = _ALNUM | {"-"}
_TEMPLATE_CHARS = _ALNUM | set("._+-")
_SNAPSHOT_CHARS = _ALNUM | set("._-")
_SIZE_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _is_label(text):
    """An RFC 1123 label: 1-63 of a-z, 0-9, '-', not starting or ending with '-'."""
    return (0 < len(text) <= 63 and set(text) <= _LABEL_CHARS
            and text[0] != "-" and text[-1] != "-")


def _is_number(text):
    return text.isascii() and text.isdigit()


def veid(value):
    """Return ``value`` as a VEID (int in MIN_VEID..MAX_VEID)."""
    text = str(value).strip()
    if not _is_number(text) or not MIN_VEID <= int(text) <= MAX_VEID:
        raise InvalidConfig(
            f"bad VEID {value!r}: use a number from {MIN_VEID} to {MAX_VEID}"
        )
    return int(text)


def hostname(value):
    """Return ``value`` if it is an RFC 1123 host name (labels of a-z, 0-9, -)."""
    text = str(value)
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_is_label(label) for label in labels):
        raise InvalidConfig(
            f"bad hostname {value!r}: use letters, digits and '-' in dot-separated "
            "labels of up to 63 characters"
        )
    return text


def snapshot_name(value):
    """Return ``value`` if it can name a snapshot: 1-40 of a-z, A-Z, 0-9, '.', '_',
    '-', starting with a letter or digit."""
    text = str(value)
    if not 0 < len(text) <= 40 or not set(text) <= _SNAPSHOT_CHARS or text[0] not in _ALNUM:
        raise InvalidConfig(f"bad snapshot name {value!r}: use up to 40 letters, digits, "
                            "'.', '_' and '-', starting with a letter or digit")
    return text


def template_name(value):
    """Return ``value`` if it can name an OS template (no path separators)."""
    text = str(value)
    if (not 0 < len(text) <= 64 or not set(text) <= _TEMPLATE_CHARS
            or text[0] not in _ALNUM or ".." in text):
        raise InvalidConfig(
            f"bad template name {value!r}: use letters, digits, '.', '_', '+' and '-'"
        )
    return text


def size(value, what="size"):
    """Parse a byte size like ``256M``, ``1G``, ``4096`` or ``unlimited``.

    Returns an int number of bytes, or ``None`` for unlimited.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidConfig(f"bad {what} {value!r}: must not be negative")
        return value
    text = str(value).strip()
    if text.lower() in ("unlimited", "max"):
        return None
    digits = text.upper().removesuffix("B") if text[-1:] in "bB" and len(text) > 1 else text.upper()
    suffix = digits[-1:] if digits[-1:] in ("K", "M", "G", "T") else ""
    number = digits[: len(digits) - len(suffix)]
    if not _is_number(number):
        raise InvalidConfig(
            f"bad {what} {value!r}: use bytes or a number with K, M, G or T, "
            "e.g. 256M, or 'unlimited'"
        )
    return int(number) * _SIZE_FACTORS[suffix]


def integer(value, what, minimum, maximum):
    """Parse an integer in ``minimum..maximum`` inclusive."""
    text = str(value).strip()
    if not _is_number(text) or not minimum <= int(text) <= maximum:
        raise InvalidConfig(f"bad {what} {value!r}: use a whole number from {minimum} to {maximum}")
    return int(text)


def format_size(nbytes):
    """Format bytes the way ``size`` parses them (``268435456`` -> ``256M``)."""
    if nbytes is None:
        return "unlimited"
    for suffix in ("T", "G", "M", "K"):
        factor = _SIZE_FACTORS[suffix]
        if nbytes and nbytes % factor == 0:
            return f"{nbytes // factor}{suffix}"
    return str(nbytes)


_IFNAME_CHARS = _ALNUM | set("_.-")


def ip_address(value, what="IP address"):
    """Return a single IPv4/IPv6 address in canonical text form (no prefix, no scope)."""
    import ipaddress  # ~4 ms: only VEs with addresses pay for it
    text = str(value).strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidConfig(f"bad {what} {value!r}: use one IPv4 or IPv6 address, "
                            "e.g. 198.18.0.11 or fd00::11") from None
    if address.is_unspecified or address.is_multicast or address.is_loopback \
            or address.is_link_local:
        raise InvalidConfig(f"bad {what} {value!r}: unspecified, multicast, loopback and "
                            "link-local addresses cannot be given to a VE")
    return str(address)


def ifname(value, what="interface name"):
    """Return a Linux network interface name (1-15 of letters, digits, '_', '.', '-')."""
    text = str(value)
    if not 0 < len(text) <= 15 or not set(text) <= _IFNAME_CHARS or text in (".", ".."):
        raise InvalidConfig(f"bad {what} {value!r}: use 1-15 letters, digits, '_', '.' or '-'")
    return text


_HASH_CHARS = frozenset(_LETTERS_DIGITS + "./$")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
              "sk-ecdsa-sha2-nistp256@openssh.com")
_B64_CHARS = frozenset(_LETTERS_DIGITS + "+/=")


def password_hash(value):
    """Return a crypt(3) hash such as ``$6$salt$...`` (never a clear-text password)."""
    if not isinstance(value, str) or not value.startswith("$") or len(value) > 512 \
            or not set(value) <= _HASH_CHARS or value.count("$") < 3:
        raise InvalidConfig("bad password hash: expected a crypt(3) hash like $6$salt$hash")
    return value


def ssh_public_key(value):
    """Return one OpenSSH public key line (``type base64 [comment]``), stripped."""
    text = str(value).strip()
    parts = text.split(None, 2)
    if "\n" in text or "\r" in text or len(parts) < 2 or parts[0] not in _KEY_TYPES \
            or not set(parts[1]) <= _B64_CHARS or len(parts[1]) < 16 or len(text) > 8192:
        raise InvalidConfig("bad SSH key: paste one public key line such as "
                            "'ssh-ed25519 AAAA... me@laptop'")
    if len(parts) == 3 and not parts[2].isprintable():
        raise InvalidConfig("bad SSH key: the comment has control characters")
    return text


def user_name(value):
    """Return a login name: letters, digits, '_', '-' and '.', not starting with '-'."""
    text = str(value)
    if not 0 < len(text) <= 32 or text[0] == "-" \
            or not set(text) <= _ALNUM | set("_-."):
        raise InvalidConfig(f"bad user name {value!r}")
    return text


def yes_no(value, what):
    """Return ``value`` as a bool: True/False, or the words yes/no."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("yes", "no"):
        raise InvalidConfig(f"bad {what} {value!r}: use yes or no")
    return text == "yes"


PATH_MAX = 4096  # characters of a path given inside a VE or a backup


def inside_path(value, where="the VE"):
    """Return ``value`` as a normalised absolute path inside a VE or a backup of one.

    Refused: not starting with '/', a NUL, over PATH_MAX characters, a '..' part.
    Repeated '/', '.' parts and a trailing '/' go (``//etc/./x/`` -> ``/etc/x``).
    The message says which rule failed, without the value; ``where`` names the place.
    """
    text = str(value or "")
    if not text.startswith("/") or "\0" in text or len(text) > PATH_MAX:
        raise InvalidConfig(f"give an absolute path inside {where}, like /etc/nginx")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidConfig("a path with '..' is refused")
    return "/" + "/".join(parts)

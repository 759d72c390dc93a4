"""SHA-512-crypt (``$6$``), the hash /etc/shadow keeps, without the stdlib ``crypt``.

``crypt`` is deprecated since Python 3.11 and gone in 3.13. This follows the
published algorithm, Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512"
(https://www.akkadia.org/drepper/SHA-crypt.txt); the numbered steps below are
that text's. Pure Python on hashlib: no C library to find, the same answer
everywhere; about 10 ms for the default 5000 rounds.
"""

import hashlib
import secrets

ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIX = "$6$"
ROUNDS_DEFAULT = 5000  # not written into the hash (what crypt.mksalt(METHOD_SHA512) gives)
ROUNDS_MIN, ROUNDS_MAX = 1000, 999_999_999
SALT_MAX = 16


def hash_password(password):
    """The ``$6$<salt>$<hash>`` of ``password`` (str, UTF-8) with a fresh 16-character salt."""
    salt = "".join(secrets.choice(ALPHABET) for _ in range(SALT_MAX))
    return sha512_crypt(password, PREFIX + salt)


def sha512_crypt(password, setting):
    """crypt(3) of ``password`` with ``setting`` = ``$6$[rounds=N$]salt[$...]``.

    As crypt(3) does: the salt ends at the first ``$`` and is cut to 16
    characters; rounds are clamped to 1000..999999999 and written back only
    when the setting gave them.
    """
    if not setting.startswith(PREFIX):
        raise ValueError("not a SHA-512-crypt setting ($6$...)")
    rest, rounds, custom = setting[len(PREFIX):], ROUNDS_DEFAULT, False
    if rest.startswith("rounds="):
        number, sep, after = rest[len("rounds="):].partition("$")
        if sep and number.isdigit():  # else crypt(3) reads it all as salt
            rounds, custom, rest = min(max(int(number), ROUNDS_MIN), ROUNDS_MAX), True, after
    salt = rest.split("$", 1)[0][:SALT_MAX]
    key = password.encode() if isinstance(password, str) else bytes(password)
    digest = _digest(key, salt.encode(), rounds)
    head = f"{PREFIX}rounds={rounds}$" if custom else PREFIX
    return f"{head}{salt}${_encode(digest)}"


def _repeat(digest, length):
    """``length`` bytes of ``digest`` repeated (whole digests, then a head of one)."""
    return digest * (length // len(digest)) + digest[:length % len(digest)]


def _digest(key, salt, rounds):
    sha = hashlib.sha512
    b = sha(key + salt + key).digest()  # steps 4-8
    a = sha(key + salt)  # steps 1-3
    a.update(_repeat(b, len(key)))  # steps 9-10
    n = len(key)
    while n:  # step 11: the length's bits, lowest first
        a.update(b if n & 1 else key)
        n >>= 1
    a = a.digest()  # step 12
    p = _repeat(sha(key * len(key)).digest(), len(key))  # steps 13-16
    s = _repeat(sha(salt * (16 + a[0])).digest(), len(salt))  # steps 17-20
    c = a
    for i in range(rounds):  # step 21
        h = sha(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    return c


def _encode(digest):
    """Step 22's base-64: bytes in the spec's order, 3 at a time, low 6 bits first."""
    out = []
    for i in range(21):  # (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), ...
        triple = [i, i + 21, i + 42]
        shift = i % 3
        high, mid, low = triple[shift:] + triple[:shift]
        out.append(_b64(digest[high] << 16 | digest[mid] << 8 | digest[low], 4))
    out.append(_b64(digest[63], 2))
    return "".join(out)


def _b64(word, chars):
    return "".join(ALPHABET[(word >> 6 * k) & 0x3F] for k in range(chars))

"""hosting/core/shadow.py: SHA-512-crypt against the spec's vectors and the C library."""

import ctypes
import ctypes.util
import random
import re
import warnings

import pytest

from hosting.core import shadow
from ve import validate

# From Drepper's "Unix crypt using SHA-256 and SHA-512" (SHA-512 test vectors).
SPEC_VECTORS = [
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCo"
     "EOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vO"
     "uZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1y"
     "xdYcz/e1JSbq3y6JMxxl8audkUEm0"),
    ("$6$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x"
     "9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ("$6$rounds=77777$short", "we have a short salt string but not a short password",
     "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFm"
     "tlcGZelFl5CxtgfiAc0"),
    ("$6$rounds=123456$asaltof16chars..", "a short string",
     "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevo"
     "BK25fs2xXgMNrCzIMVcgEJAstJeonj1"),
    # Below the minimum: the spec clamps to 1000 (libxcrypt refuses; we never ask for it).
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4Z"
     "EQpyUNGc0dqbpBYYBaHHrsX."),
]


@pytest.mark.parametrize("setting, password, expected", SPEC_VECTORS)
def test_the_specs_vectors(setting, password, expected):
    assert shadow.sha512_crypt(password, setting) == expected


def system_crypt():
    """The C library's crypt(3): the stdlib module while it exists, else libcrypt by ctypes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        return crypt.crypt
    except ImportError:  # Python 3.13+
        libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
        libcrypt.crypt.restype, libcrypt.crypt.argtypes = ctypes.c_char_p, [ctypes.c_char_p] * 2
        return lambda key, setting: libcrypt.crypt(key.encode(), setting.encode()).decode()


def random_password(rng):
    length = rng.choice([0, 1, 7, 8, 15, 16, 63, 64, 65, 127, 128, 200, 256])
    alphabet = [chr(c) for c in range(1, 128)] + list("äöüß€日本語🙂")
    return "".join(rng.choice(alphabet) for _ in range(length))


def test_random_passwords_hash_as_the_c_library_does():
    system, rng = system_crypt(), random.Random(13)
    for _ in range(40):
        password = random_password(rng)
        hashed = shadow.hash_password(password)
        assert system(password, hashed) == hashed, password
        setting = f"$6$rounds={rng.randint(1000, 3000)}$" + "".join(
            rng.choice(shadow.ALPHABET) for _ in range(rng.randint(1, 20)))
        assert shadow.sha512_crypt(password, setting) == system(password, setting), password


def test_a_fresh_hash_is_what_shadow_takes_and_salted_anew():
    first, second = shadow.hash_password("long-secret-1"), shadow.hash_password("long-secret-1")
    assert re.fullmatch(r"\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}", first)
    assert first != second  # a new salt each time
    assert validate.password_hash(first) == first
    assert shadow.sha512_crypt("long-secret-1", first) == first  # verifying re-hashes with it
    assert shadow.sha512_crypt("long-secret-2", first) != first


def test_only_sha512_settings_are_taken():
    with pytest.raises(ValueError):
        shadow.sha512_crypt("secret", "$5$saltstring")

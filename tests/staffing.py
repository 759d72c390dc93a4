"""Staff logins and two-factor sign-in for tests.

A staff member always has a role (hosting/core/roles.py) and a second factor
(staff must): ``make_staff(...)`` gives both, and ``verified_login(client, user)``
signs a test client in as having given a code, the way the code page does (there
is no setting that switches two-factor off: nothing to leave on in production).
``totp(secret)`` computes a current code from a device's key (RFC 6238, by the
standard library alone, so tests check the library's codes, not use them).
"""

import hashlib
import hmac
import struct
import time


def totp(key_hex, at=None, step=30, digits=6):
    """The TOTP code of hex key ``key_hex`` at time ``at`` (default now)."""
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(bytes.fromhex(key_hex), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10 ** digits).zfill(digits)


def enrol(user):
    """A confirmed authenticator for ``user``; returns the device (its key: device.key)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice
    return TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)


def make_staff(username, password=None, role="administrator", email=None, **extra):
    """A staff login ``username`` with ``role`` (default administrator) and an
    authenticator (``user.totp_device``)."""
    from django.contrib.auth.models import User

    from hosting.core import roles
    user = User.objects.create_user(username, email or f"{username}@example.com", password,
                                    is_staff=True, **extra)
    roles.set_role(user, role)
    user.totp_device = enrol(user)
    return user


def verified_login(client, user):
    """``client.force_login(user)`` and, if ``user`` has an authenticator, mark the
    session as having given its code (what django_otp.login does on the code page)."""
    from django_otp import DEVICE_ID_SESSION_KEY

    from hosting.core import twofactor
    client.force_login(user)
    device = twofactor.totp_device(user)
    if device is not None:
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return client

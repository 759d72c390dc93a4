"""Two-factor sign-in of a login from the command line: reset it (a lost phone), or
enrol it (scripted set-ups, the test stack)."""

import os
from base64 import b32encode

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice

from hosting.core import audit, twofactor


class Command(BaseCommand):
    help = ("--reset: remove USERNAME's authenticator and recovery codes (they enrol again at "
            "their next sign-in); --enrol: give USERNAME a new authenticator and print its "
            "key and recovery codes (or write the key to --key-file).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--reset", action="store_true")
        what.add_argument("--enrol", action="store_true")
        parser.add_argument("--key-file", help="with --enrol: write the hex key here (0600) "
                                               "instead of printing it")

    def handle(self, *args, username, reset, enrol, key_file=None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no login named {username!r}")
        twofactor.remove(user)
        if reset:
            audit.record(None, "auth.2fa_removed", user, by="manage.py")
            self.stdout.write(f"{username} signs in with a password only until they enrol "
                              "again" + (" (staff must, at once)" if user.is_staff else ""))
            return
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
        codes = twofactor.make_recovery_codes(user)
        audit.record(None, "auth.2fa_enrolled", user, by="manage.py")
        if key_file:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(device.key + "\n")
            return
        self.stdout.write(f"key (base32): {b32encode(device.bin_key).decode()}")
        self.stdout.write(f"otpauth URL: {device.config_url}")
        self.stdout.write("recovery codes: " + " ".join(codes))

"""Make an API key for a login and print it (the only time it is shown)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from hosting.core import audit, tokens


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print its key once (it is stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="manage.py api_token",
                            help="what the key is for (shown in the admin)")
        parser.add_argument("--expires-days", type=int, default=0,
                            help="refuse the key after this many days (default: never)")
        parser.add_argument("--read-only", action="store_true",
                            help="the key may only read (GET, HEAD, OPTIONS)")

    def handle(self, *args, username, name, expires_days, read_only, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no login named {username!r}")
        if expires_days < 0:
            raise CommandError("--expires-days must be 0 (never) or more")
        token, key = tokens.issue(user, name, tokens.expiry_in(expires_days), read_only)
        audit.record(None, "auth.token_issued", user, prefix=token.prefix, by="manage.py",
                     read_only=read_only, expires=token.expires.isoformat() if token.expires
                     else None)
        self.stdout.write(key)

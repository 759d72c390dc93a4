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

    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no login named {username!r}")
        token, key = tokens.issue(user, name)
        audit.record(None, "auth.token_issued", user, prefix=token.prefix, by="manage.py")
        self.stdout.write(key)
